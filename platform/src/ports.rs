//! The platform's local port table, `ports.txt` at the root of the repository: the services'
//! default addresses come from it, as do `./dev`'s and the load tools', so a port is written in
//! one place.

const TABLE: &str = include_str!("../../ports.txt");

/// Where a part of the platform listens on one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPorts {
    pub grpc: u16,
    pub admin: u16,
}

/// Every entry of the table: (name, ports).
pub fn table() -> Vec<(&'static str, LocalPorts)> {
    TABLE
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?;
            let grpc = fields.next()?.parse().ok()?;
            let admin = fields.next()?.parse().ok()?;
            Some((name, LocalPorts { grpc, admin }))
        })
        .collect()
}

/// The ports of `name`. A name missing from the table is a bug in this repository (a test
/// checks every service's), so it stops the program with the name.
pub fn local(name: &str) -> LocalPorts {
    table()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, ports)| ports)
        .unwrap_or_else(|| panic!("{name} is not in ports.txt"))
}

/// The gRPC URL of `name` on this machine, as a peer reaches it.
pub fn local_url(name: &str) -> String {
    format!("http://127.0.0.1:{}", local(name).grpc)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_line_of_the_table_reads_and_no_port_is_taken_twice() {
        let lines = TABLE
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .count();
        let entries = table();
        assert_eq!(entries.len(), lines, "a line of ports.txt does not read");
        let mut seen = BTreeSet::new();
        for (name, ports) in &entries {
            assert!(seen.insert(ports.grpc), "{name}: gRPC port {} twice", ports.grpc);
            if ports.admin != ports.grpc {
                assert!(
                    seen.insert(ports.admin),
                    "{name}: admin port {} twice",
                    ports.admin
                );
            }
        }
        for part in [
            "identity",
            "catalog",
            "inventory",
            "orders",
            "payments",
            "notify",
            "reports",
            "gateway",
        ] {
            local(part);
        }
    }

    #[test]
    fn the_prometheus_scrape_config_scrapes_every_admin_port_of_the_table() {
        let config = include_str!("../../mesh/observability/prometheus.yml");
        let scraped: BTreeSet<u16> = config
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- 127.0.0.1:"))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect();
        let running = [
            "identity",
            "catalog",
            "inventory",
            "orders",
            "payments",
            "notify",
            "gateway",
        ];
        let expected: BTreeSet<u16> = running.iter().map(|s| local(s).admin).collect();
        assert_eq!(scraped, expected);
    }
}
