//! Fitting the guest's screen onto the host's: the largest size with the
//! guest's aspect ratio, centred, black bars around it, nearest-neighbour
//! sampling (sharp text, no blending cost). Tables map every destination
//! column and row to its source, so redrawing a damaged rectangle touches
//! only the destination pixels it covers.

use std::ops::Range;

/// One guest size placed on one host size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    pub src_width: u32,
    pub src_height: u32,
    /// The picture's place on the host screen.
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    /// For each picture column, its source column.
    columns: Vec<u32>,
    /// For each picture row, its source row.
    rows: Vec<u32>,
}

/// Source index for each of `dst` destination cells spread over `src`
/// source cells (the centre of each destination cell, sampled).
fn sample_map(src: u32, dst: u32) -> Vec<u32> {
    (0..dst)
        .map(|d| {
            let s = (u64::from(d) * 2 + 1) * u64::from(src) / (u64::from(dst) * 2);
            s.min(u64::from(src) - 1) as u32
        })
        .collect()
}

/// The destination cells whose source lies in `src` (the map is sorted).
fn span(map: &[u32], src: Range<u32>) -> Range<usize> {
    map.partition_point(|&s| s < src.start)..map.partition_point(|&s| s < src.end)
}

impl Fit {
    /// `src` fitted into `dst`; both must be non-empty.
    pub fn new(src_width: u32, src_height: u32, dst_width: u32, dst_height: u32) -> Fit {
        let (src_width, src_height) = (src_width.max(1), src_height.max(1));
        let (dst_width, dst_height) = (dst_width.max(1), dst_height.max(1));
        // Compare dst_w/src_w with dst_h/src_h without rounding.
        let width_bound = u64::from(dst_width) * u64::from(src_height)
            <= u64::from(dst_height) * u64::from(src_width);
        let (width, height) = if width_bound {
            let h = u64::from(src_height) * u64::from(dst_width) / u64::from(src_width);
            (dst_width, (h as u32).max(1))
        } else {
            let w = u64::from(src_width) * u64::from(dst_height) / u64::from(src_height);
            ((w as u32).max(1), dst_height)
        };
        Fit {
            src_width,
            src_height,
            x: (dst_width - width) / 2,
            y: (dst_height - height) / 2,
            width,
            height,
            columns: sample_map(src_width, width),
            rows: sample_map(src_height, height),
        }
    }

    /// Picture columns (relative to [`Fit::x`]) that show source columns `src`.
    pub fn columns_of(&self, src: Range<u32>) -> Range<usize> {
        span(&self.columns, src)
    }

    /// Picture rows (relative to [`Fit::y`]) that show source rows `src`.
    pub fn rows_of(&self, src: Range<u32>) -> Range<usize> {
        span(&self.rows, src)
    }

    /// The source columns shown in picture columns `columns`.
    pub fn source_columns(&self, columns: Range<usize>) -> &[u32] {
        &self.columns[columns]
    }

    /// The source column shown in picture column `column`.
    pub fn source_column(&self, column: usize) -> u32 {
        self.columns[column]
    }

    /// The source row shown in picture row `row`.
    pub fn source_row(&self, row: usize) -> u32 {
        self.rows[row]
    }

    /// The source cell shown at host pixel (`x`, `y`), if the picture covers it.
    pub fn source_of(&self, x: u32, y: u32) -> Option<(u32, u32)> {
        let column = x.checked_sub(self.x).filter(|&c| c < self.width)?;
        let row = y.checked_sub(self.y).filter(|&r| r < self.height)?;
        Some((self.columns[column as usize], self.rows[row as usize]))
    }

    /// The host pixel where source cell (`x`, `y`)'s top-left corner lands.
    pub fn host_of(&self, x: u32, y: u32) -> (u32, u32) {
        let column = self.columns_of(x..x + 1).start as u32;
        let row = self.rows_of(y..y + 1).start as u32;
        (self.x + column, self.y + row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_keep_the_aspect_ratio_and_centre() {
        // 4:3 text mode on 16:10: bars left and right.
        let fit = Fit::new(720, 400, 1280, 800);
        assert_eq!((fit.x, fit.y, fit.width, fit.height), (0, 44, 1280, 711));
        let fit = Fit::new(640, 480, 1280, 800);
        assert_eq!((fit.x, fit.y, fit.width, fit.height), (107, 0, 1066, 800));
        // Same size: the identity.
        let fit = Fit::new(800, 600, 800, 600);
        assert_eq!((fit.x, fit.y, fit.width, fit.height), (0, 0, 800, 600));
        assert!((0..800).all(|c| fit.source_column(c) == c as u32));
        // Larger guest: shrunk.
        let fit = Fit::new(1920, 1080, 1024, 768);
        assert_eq!((fit.x, fit.y, fit.width, fit.height), (0, 96, 1024, 576));
    }

    #[test]
    fn integer_scale_repeats_each_pixel() {
        let fit = Fit::new(320, 200, 960, 600);
        assert_eq!((fit.width, fit.height), (960, 600));
        for c in 0..960 {
            assert_eq!(fit.source_column(c), c as u32 / 3);
        }
        assert_eq!(fit.columns_of(10..12), 30..36);
        assert_eq!(fit.rows_of(199..200), 597..600);
        assert_eq!(fit.host_of(160, 100), (480, 300));
        assert_eq!(fit.source_of(482, 302), Some((160, 100)));
    }

    #[test]
    fn spans_cover_every_destination_once() {
        let fit = Fit::new(720, 400, 1024, 768);
        // Every picture column belongs to exactly one source column's span.
        let mut covered = 0;
        for s in 0..720 {
            let span = fit.columns_of(s..s + 1);
            assert_eq!(span.start, covered, "source column {s}");
            covered = span.end;
        }
        assert_eq!(covered, fit.width as usize);
        // A damaged range maps to the union of its columns' spans.
        assert_eq!(
            fit.columns_of(100..200).start,
            fit.columns_of(100..101).start
        );
        assert_eq!(fit.columns_of(100..200).end, fit.columns_of(199..200).end);
        assert_eq!(fit.columns_of(0..720), 0..fit.width as usize);
    }

    #[test]
    fn outside_the_picture_is_none() {
        let fit = Fit::new(640, 480, 1280, 800);
        assert_eq!(fit.source_of(106, 10), None);
        assert_eq!(fit.source_of(107, 0), Some((0, 0)));
        assert_eq!(fit.source_of(107 + 1065, 799), Some((639, 479)));
        assert_eq!(fit.source_of(107 + 1066, 10), None);
        // Degenerate sizes do not panic.
        let tiny = Fit::new(0, 0, 1, 1);
        assert_eq!(tiny.source_of(0, 0), Some((0, 0)));
    }
}
