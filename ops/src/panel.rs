//! Panels: consecutive images whose GEMM operands sit side by side, so that a convolution
//! on a small map runs as one wide GEMM per panel instead of one narrow GEMM per image.
//!
//! ResNet's last stages work on 14×14 and 7×7 maps: `L` = 196 and 49 output positions per
//! image. A GEMM only 49 columns wide spends most of its time packing the weight (`C_out ×
//! K`, 9 MiB for a 512→512 3×3 convolution), once per image. In a panel of `p` images,
//! image `i` owns columns `i·L .. (i + 1)·L` of every row of a `(rows, p·L)` matrix, and
//! the weight is packed once per panel.

use std::mem::MaybeUninit;
use std::ops::Range;

use num_traits::Zero;

/// Columns a panel is made at least as wide as, where the images allow: from here on the
/// GEMM's packing of the weight is a small part of its work.
const PANEL_COLUMNS: usize = 512;

/// A run of consecutive images of the batch, `l` columns each.
#[derive(Debug, Clone)]
pub(crate) struct Panel {
    pub images: Range<usize>,
    pub l: usize,
}

/// The panels of `images`, `l` columns per image: one image each where an image is
/// [`PANEL_COLUMNS`] wide already, else as many panels as keep each at least that wide
/// (one, if the images together are narrower), the images spread evenly over them.
pub(crate) fn panels(images: Range<usize>, l: usize) -> impl Iterator<Item = Panel> {
    let per_panel = PANEL_COLUMNS.div_ceil(l.max(1));
    let len = images.len();
    let count = (len / per_panel).max(1).min(len);
    (0..count).map(move |p| Panel {
        images: images.start + p * len / count..images.start + (p + 1) * len / count,
        l,
    })
}

impl Panel {
    /// Columns of the panel's matrices, `images · l`.
    pub fn width(&self) -> usize {
        self.images.len() * self.l
    }

    /// Whether the panel is a single image (whose own planes serve as the operands).
    pub fn is_single(&self) -> bool {
        self.images.len() == 1
    }

    /// Copies the `(rows, l)` plane of each of the panel's images (image `n` at
    /// `src[n·rows·l ..]`) into `dst`, resized to `(rows, width)`.
    pub fn gather<T: Copy + Zero>(&self, src: &[T], rows: usize, dst: &mut Vec<T>) {
        let (l, width) = (self.l, self.width());
        dst.resize(rows * width, T::zero());
        for (i, img) in self.images.clone().enumerate() {
            let plane = &src[img * rows * l..][..rows * l];
            for (from, to) in plane.chunks_exact(l).zip(dst[i * l..].chunks_mut(width)) {
                to[..l].copy_from_slice(from);
            }
        }
    }

    /// The panel's `(rows, width)` matrix of planes `src` (image `n`'s `(rows, l)` plane at
    /// `src[n·rows·l ..]`): one image's own plane, or the images' planes gathered side by
    /// side into `scratch`.
    pub fn matrix<'a, T: Copy + Zero>(
        &self,
        src: &'a [T],
        rows: usize,
        scratch: &'a mut Vec<T>,
    ) -> &'a [T] {
        if self.is_single() {
            let plane = rows * self.l;
            return &src[self.images.start * plane..][..plane];
        }
        self.gather(src, rows, scratch);
        scratch
    }

    /// Image `i`'s run of each row of `src: (rows, width)`, `l` values each.
    pub fn rows_of<'a, T>(&self, i: usize, src: &'a [T]) -> impl Iterator<Item = &'a [T]> {
        let l = self.l;
        src[i * l..].chunks(self.width()).map(move |row| &row[..l])
    }

    /// Writes image `i`'s columns of `src: (rows, width)` into its plane `dst: (rows, l)`,
    /// which may be uninitialised.
    pub fn scatter<T: Copy>(&self, i: usize, src: &[T], dst: &mut [MaybeUninit<T>]) {
        for (to, from) in dst.chunks_exact_mut(self.l).zip(self.rows_of(i, src)) {
            for (d, &s) in to.iter_mut().zip(from) {
                d.write(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_cover_the_images_once_and_are_wide_enough() {
        for l in [1, 49, 196, 300, 511, 512, 784, 3136] {
            for len in 1..20 {
                let images = 3..3 + len;
                let panels: Vec<Panel> = panels(images.clone(), l).collect();
                let covered: Vec<usize> = panels.iter().flat_map(|p| p.images.clone()).collect();
                assert_eq!(
                    covered,
                    images.clone().collect::<Vec<_>>(),
                    "l {l} len {len}"
                );
                let narrow = panels.iter().filter(|p| p.width() < PANEL_COLUMNS).count();
                if len * l >= PANEL_COLUMNS {
                    assert_eq!(narrow, 0, "l {l} len {len}");
                } else {
                    assert_eq!(panels.len(), 1, "l {l} len {len}");
                }
                if l >= PANEL_COLUMNS {
                    assert!(panels.iter().all(Panel::is_single), "l {l} len {len}");
                }
            }
        }
    }

    #[test]
    fn matrix_and_scatter_undo_each_other() {
        let (rows, l): (usize, usize) = (3, 4);
        let src: Vec<i32> = (0..(5 * rows * l) as i32).collect();
        let panel = Panel { images: 1..4, l };
        let mut wide = Vec::new();
        panel.gather(&src, rows, &mut wide);
        assert_eq!(wide.len(), rows * panel.width());
        // Row 1 of the panel: row 1 of images 1, 2 and 3 side by side.
        let row_of = |img: usize| src[(img * rows + 1) * l..][..l].to_vec();
        assert_eq!(wide[12..24], [row_of(1), row_of(2), row_of(3)].concat());
        let mut scratch = Vec::new();
        assert_eq!(panel.matrix(&src, rows, &mut scratch), &wide[..]);
        let single = Panel { images: 2..3, l };
        let plane = single.matrix(&src, rows, &mut scratch);
        assert_eq!(plane, &src[2 * rows * l..][..rows * l]);
        for (i, img) in panel.images.clone().enumerate() {
            let mut plane = vec![MaybeUninit::uninit(); rows * l];
            panel.scatter(i, &wide, &mut plane);
            // SAFETY: `scatter` wrote every element.
            let plane: Vec<i32> = plane.iter().map(|v| unsafe { v.assume_init() }).collect();
            assert_eq!(plane, src[img * rows * l..][..rows * l]);
        }
    }
}
