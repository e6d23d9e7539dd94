//! The platform's whole v1 API, generated from `proto/` at build time.
//!
//! Modules follow the proto packages (`ticketing::identity::v1`, ...). [`FILE_DESCRIPTOR_SET`] is
//! the encoded `google.protobuf.FileDescriptorSet` of every file, with imports and source info, for
//! server reflection and the REST gateway.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/ticketing.rs"));

pub mod domain_events;
pub use domain_events::DomainEvent;

/// Every compiled file (including `google/api` and `google/protobuf` imports), encoded.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ticketing_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_holds_every_service_with_its_http_rules() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let services: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect();
        for expected in [
            "ticketing.identity.v1.IdentityService",
            "ticketing.catalog.v1.CatalogService",
            "ticketing.inventory.v1.InventoryService",
            "ticketing.orders.v1.OrdersService",
            "ticketing.payments.v1.PaymentsService",
            "ticketing.notify.v1.NotifyService",
            "ticketing.reports.v1.ReportsService",
        ] {
            assert!(services.iter().any(|s| s == expected), "{expected} missing");
        }
        // google.api.http is extension 72295728 on MethodOptions; prost keeps unknown extension
        // bytes out of the typed options, so check the raw encoding of a known annotated method.
        let login = set
            .file
            .iter()
            .flat_map(|f| f.service.iter())
            .flat_map(|s| s.method.iter())
            .find(|m| m.name() == "Login")
            .expect("Login method");
        assert!(
            login.options.is_some(),
            "Login carries its google.api.http option"
        );
    }
}
