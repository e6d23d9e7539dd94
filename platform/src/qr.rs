//! A ticket's QR code, as SVG or PNG.

use crate::{ApiError, ApiResult};
use qrcode::{Color, EcLevel, QrCode, render::svg};

/// Pixels per module in the PNG; 4 modules of quiet zone around the code.
const SCALE: usize = 8;
const QUIET: usize = 4;

fn encode(content: &str) -> ApiResult<QrCode> {
    // Level M survives a scuffed phone screen; the secret is short enough for it.
    QrCode::with_error_correction_level(content.as_bytes(), EcLevel::M)
        .map_err(|e| ApiError::internal(format!("QR encoding failed: {e}")))
}

pub fn svg(content: &str) -> ApiResult<String> {
    Ok(encode(content)?
        .render::<svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

pub fn png(content: &str) -> ApiResult<Vec<u8>> {
    let code = encode(content)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color == Color::Dark {
            let (mx, my) = (i % modules + QUIET, i / modules + QUIET);
            for y in my * SCALE..(my + 1) * SCALE {
                pixels[y * side + mx * SCALE..y * side + (mx + 1) * SCALE].fill(0);
            }
        }
    }
    let mut out = Vec::new();
    {
        let side = u32::try_from(side).map_err(|_| ApiError::internal("QR code too large"))?;
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|e| ApiError::internal(format!("PNG header: {e}")))?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| ApiError::internal(format!("PNG data: {e}")))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_and_png_render() {
        let svg = svg("tk-abc.some-secret").expect("svg");
        assert!(svg.starts_with("<?xml"), "{}", &svg[..40]);
        let png = png("tk-abc.some-secret").expect("png");
        assert_eq!(&png[1..4], b"PNG");
    }
}
