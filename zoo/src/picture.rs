//! Images in: decoded on the CPU into 8-bit RGB (height × width × 3) within limits, shrunk on
//! the CPU only when larger than the compiled canvas, and packed into the canvas batch the
//! graph reads.
use crate::ZooError;
use image::{ImageReader, Limits, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// One decoded image: RGB8 pixels row by row, and the size of the image the user gave (results
/// come back in those pixels even when the pixels here were shrunk).
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    /// The user's image size [height, width] (equal to the above unless shrunk).
    pub original: [usize; 2],
}

impl Picture {
    /// An image from raw RGB8 pixels (height × width × 3).
    pub fn from_rgb(width: usize, height: usize, rgb: Vec<u8>) -> Result<Picture, ZooError> {
        if width == 0 || height == 0 || rgb.len() != width * height * 3 {
            return Err(ZooError::Image(format!(
                "{width}×{height} RGB needs {} bytes, got {}",
                width * height * 3,
                rgb.len()
            )));
        }
        Ok(Picture { width, height, rgb, original: [height, width] })
    }

    /// Decodes PNG or JPEG bytes (the format read from the bytes, not a name), refusing images
    /// over `max_pixels` before their pixels are allocated.
    pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<Picture, ZooError> {
        let mut reader =
            ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ZooError::Image(e.to_string()))?;
        let side = max_pixels.min(u32::MAX as u64) as u32;
        let mut limits = Limits::default();
        limits.max_image_width = Some(side);
        limits.max_image_height = Some(side);
        limits.max_alloc = Some(max_pixels.saturating_mul(8));
        reader.limits(limits.clone());
        let (w, h) = reader.into_dimensions().map_err(|e| ZooError::Image(e.to_string()))?;
        if w == 0 || h == 0 || w as u64 * h as u64 > max_pixels {
            return Err(ZooError::Image(format!("{w}×{h} is empty or over the limit of {max_pixels} pixels")));
        }
        // dimensions consumed the reader: decode from a fresh one under the same limits
        let mut reader =
            ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ZooError::Image(e.to_string()))?;
        reader.limits(limits);
        let img = reader.decode().map_err(|e| ZooError::Image(e.to_string()))?.to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        Picture::from_rgb(w, h, img.into_raw())
    }

    /// Reads and decodes an image file; errors name the file.
    pub fn open(path: &Path, max_pixels: u64) -> Result<Picture, ZooError> {
        let bytes = std::fs::read(path).map_err(|e| ZooError::file(path, e))?;
        Picture::decode(&bytes, max_pixels).map_err(|e| ZooError::Image(format!("{}: {e}", path.display())))
    }

    /// The [height, width] `fitted` gives.
    pub fn fitted_size(&self, [max_h, max_w]: [usize; 2]) -> [usize; 2] {
        if self.height <= max_h && self.width <= max_w {
            return [self.height, self.width];
        }
        let s = (max_h as f64 / self.height as f64).min(max_w as f64 / self.width as f64);
        [((self.height as f64 * s) as usize).clamp(1, max_h), ((self.width as f64 * s) as usize).clamp(1, max_w)]
    }

    /// This image within `[max_h, max_w]`: itself, or shrunk (bilinear, keeping its aspect) with
    /// its original size kept.
    pub fn fitted(self, max: [usize; 2]) -> Picture {
        let [h, w] = self.fitted_size(max);
        if [h, w] == [self.height, self.width] {
            return self;
        }
        let img =
            RgbImage::from_raw(self.width as u32, self.height as u32, self.rgb).expect("size checked at construction");
        let small = image::imageops::resize(&img, w as u32, h as u32, image::imageops::FilterType::Triangle);
        Picture { width: w, height: h, rgb: small.into_raw(), original: self.original }
    }
}

/// A batch of images packed for the graph: `pixels` u8 [n, canvas_h, canvas_w, 3] with each image
/// in the top-left corner, and `extent` f32 [n, 2] with each image's (height, width) there.
pub struct CanvasBatch {
    pub n: usize,
    pub pixels: Vec<u8>,
    pub extent: Vec<f32>,
}

impl CanvasBatch {
    /// Packs pictures (already `fitted` to the canvas) into one batch.
    pub fn pack(pictures: &[&Picture], [ch, cw]: [usize; 2]) -> CanvasBatch {
        let mut pixels = vec![0u8; pictures.len() * ch * cw * 3];
        let mut extent = Vec::with_capacity(pictures.len() * 2);
        for (i, p) in pictures.iter().enumerate() {
            assert!(p.height <= ch && p.width <= cw, "pictures are fitted before packing");
            let base = i * ch * cw * 3;
            for y in 0..p.height {
                let row = &p.rgb[y * p.width * 3..(y + 1) * p.width * 3];
                pixels[base + y * cw * 3..][..row.len()].copy_from_slice(row);
            }
            extent.extend([p.height as f32, p.width as f32]);
        }
        CanvasBatch { n: pictures.len(), pixels, extent }
    }
}
