//! Results drawn on the picture for a person to look at: boxes in their class's colour, masks
//! blended over the image. Written as PNG through a temporary file and a rename, so an output
//! file is whole or absent.
use crate::detector::Detection;
use crate::picture::Picture;
use crate::segmenter::Mask;
use crate::ZooError;
use image::{Rgb, RgbImage};
use std::path::Path;

/// A distinct, stable colour per class.
pub fn colour(class: usize) -> [u8; 3] {
    let h = (class as u32).wrapping_mul(2654435761);
    [(h >> 24) as u8 | 64, (h >> 16) as u8 | 64, (h >> 8) as u8 | 64]
}

fn canvas(p: &Picture) -> RgbImage {
    RgbImage::from_raw(p.width as u32, p.height as u32, p.rgb.clone()).expect("sizes checked at construction")
}

/// The picture with each detection's box outlined (3 pixels wide, clipped to the image).
pub fn boxes(p: &Picture, dets: &[Detection]) -> RgbImage {
    let mut img = canvas(p);
    let (w, h) = (p.width as i64, p.height as i64);
    // detections are in the original image's pixels; the picture may have been shrunk
    let (sx, sy) = (p.width as f32 / p.original[1] as f32, p.height as f32 / p.original[0] as f32);
    for d in dets {
        let c = Rgb(colour(d.class));
        let [x1, y1, x2, y2] =
            [d.bbox[0] * sx, d.bbox[1] * sy, d.bbox[2] * sx, d.bbox[3] * sy].map(|v| v.round() as i64);
        let mut put = |x: i64, y: i64| {
            if (0..w).contains(&x) && (0..h).contains(&y) {
                img.put_pixel(x as u32, y as u32, c);
            }
        };
        for t in 0..3 {
            for x in x1..=x2 {
                put(x, y1 + t);
                put(x, y2 - t);
            }
            for y in y1..=y2 {
                put(x1 + t, y);
                put(x2 - t, y);
            }
        }
    }
    img
}

/// The picture with its mask blended in (half each; class 0, the background, left clear).
pub fn mask(p: &Picture, m: &Mask) -> RgbImage {
    let mut img = canvas(p);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let (my, mx) = (y as usize * m.height / p.height, x as usize * m.width / p.width);
        let class = m.at(my, mx) as usize;
        if class != 0 {
            let c = colour(class);
            for (p, c) in px.0.iter_mut().zip(c) {
                *p = ((*p as u16 + c as u16) / 2) as u8;
            }
        }
    }
    img
}

/// Writes a mask's classes as a 16-bit grayscale PNG at `path` (classes over 65535 saturate).
pub fn save_mask(m: &Mask, path: &Path) -> Result<(), ZooError> {
    let px: Vec<u16> = m.classes.iter().map(|&c| c.min(u16::MAX as u32) as u16).collect();
    let img = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(m.width as u32, m.height as u32, px)
        .expect("a mask holds width × height classes");
    save(&image::DynamicImage::ImageLuma16(img), path)
}

/// Writes `img` as PNG at `path`, whole or not at all.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<(), ZooError> {
    save(&image::DynamicImage::ImageRgb8(img.clone()), path)
}

fn save(img: &image::DynamicImage, path: &Path) -> Result<(), ZooError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| ZooError::file(dir, e))?;
    let failed = |why: String| ZooError::File { path: path.display().to_string(), why };
    let mut out = std::io::BufWriter::new(tmp.as_file());
    img.write_to(&mut out, image::ImageFormat::Png).map_err(|e| failed(e.to_string()))?;
    out.into_inner().map_err(|e| failed(e.to_string()))?.sync_all().map_err(|e| failed(e.to_string()))?;
    tmp.persist(path).map_err(|e| ZooError::file(path, e.error))?;
    Ok(())
}
