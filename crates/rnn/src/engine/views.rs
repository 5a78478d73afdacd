//! Raw views of the matrices that the threads of one pass share.
//!
//! A pass's threads write disjoint parts of the same buffers at every step: each work item owns
//! some rows (its [`Part`] of the batch's sequences, see `schedule.rs`) and some columns (its
//! block of units, see `blocks.rs`) of each buffer, and reads what the previous phase wrote.
//! Rust's borrows cannot express "these rows, those columns, until the next meeting", so the
//! buffers are shared as raw row-major matrices ([`Shared`]) and every access is `unsafe`, with
//! the argument for its disjointness written next to it. Debug builds check what can be
//! checked locally: every view lies inside its matrix ([`Shared`] knows its shape), every row
//! read or written through [`Rows`] is one of its rows, and the row parts of a pass are
//! disjoint and cover the batch (`Sharing::new`).
//!
//! The rows of the pass's inputs, outputs and saved values follow the order of its
//! [`Batches`]: time-major, or batch-major (`batch_first` as it is), where a step's rows are
//! `L` rows apart. A work item reaches them through [`Part`], as a strided view.

use std::ops::Range;

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, ShapeBuilder};

use super::Batches;

/// Row slices of a strided matrix that several threads write disjoint parts of: row `i` is
/// `len` values from `ptr + i * stride`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rows<F> {
    ptr: *mut F,
    stride: usize,
    len: usize,
    /// How many rows there are from `ptr` (debug builds check every index against it).
    #[cfg(debug_assertions)]
    rows: usize,
}

impl<F> Rows<F> {
    /// No values (a buffer the cell does not use).
    pub(crate) fn empty() -> Self {
        Rows {
            ptr: std::ptr::NonNull::dangling().as_ptr(),
            stride: 0,
            len: 0,
            #[cfg(debug_assertions)]
            rows: usize::MAX,
        }
    }

    /// Whether the rows hold no values.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row `i`, to write.
    ///
    /// # Safety
    /// Row `i` lies inside the allocation, and nothing else reads or writes it meanwhile.
    #[inline(always)]
    pub(crate) unsafe fn row<'a>(self, i: usize) -> &'a mut [F] {
        if self.len == 0 {
            return &mut [];
        }
        #[cfg(debug_assertions)]
        assert!(i < self.rows, "row {i} of {}", self.rows);
        std::slice::from_raw_parts_mut(self.ptr.add(i * self.stride), self.len)
    }

    /// Row `i`, to read.
    ///
    /// # Safety
    /// Row `i` lies inside the allocation, and nothing writes it meanwhile.
    #[inline(always)]
    pub(crate) unsafe fn get<'a>(self, i: usize) -> &'a [F] {
        if self.len == 0 {
            return &[];
        }
        #[cfg(debug_assertions)]
        assert!(i < self.rows, "row {i} of {}", self.rows);
        std::slice::from_raw_parts(self.ptr.add(i * self.stride), self.len)
    }
}

/// A row-major matrix that the threads of a pass share, each touching its own rows and
/// columns of it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shared<F> {
    ptr: *mut F,
    stride: usize,
    /// The matrix's rows and columns, for the debug checks of every view.
    rows: usize,
    cols: usize,
}

// SAFETY: the threads of a pass access disjoint elements (see each use), and the buffers
// outlive the pass.
unsafe impl<F: Send> Send for Shared<F> {}
unsafe impl<F: Sync> Sync for Shared<F> {}

impl<F> Shared<F> {
    /// Shares `a`, whose rows must be contiguous (unit column stride).
    pub(crate) fn new(a: &mut ArrayViewMut2<'_, F>) -> Self {
        assert!(
            a.ncols() <= 1 || a.nrows() == 0 || a.strides()[1] == 1,
            "rows must be contiguous"
        );
        Shared {
            ptr: a.as_mut_ptr(),
            stride: a.strides()[0].max(0) as usize,
            rows: a.nrows(),
            cols: a.ncols(),
        }
    }

    /// Shares a buffer the pass writes before it reads it.
    pub(crate) fn uninit(a: &mut Array2<std::mem::MaybeUninit<F>>) -> Self {
        Shared {
            ptr: a.as_mut_ptr().cast::<F>(),
            stride: a.strides()[0].max(0) as usize,
            rows: a.nrows(),
            cols: a.ncols(),
        }
    }

    /// Shares a matrix the pass only reads.
    pub(crate) fn read_only(a: &ArrayView2<'_, F>) -> Self {
        assert!(
            a.ncols() <= 1 || a.nrows() == 0 || a.strides()[1] == 1,
            "rows must be contiguous"
        );
        Shared {
            ptr: a.as_ptr().cast_mut(),
            stride: a.strides()[0].max(0) as usize,
            rows: a.nrows(),
            cols: a.ncols(),
        }
    }

    /// The matrix of every `k`-th row of this one from row `r0`.
    pub(crate) fn every(self, r0: usize, k: usize) -> Self {
        let rows = if k == 0 {
            self.rows
        } else {
            self.rows.saturating_sub(r0).div_ceil(k)
        };
        Shared {
            ptr: self.ptr.wrapping_add(r0 * self.stride),
            stride: self.stride * k,
            rows,
            cols: self.cols,
        }
    }

    /// Debug builds: rows `r0..r0 + n` and columns `cols` lie inside the matrix.
    #[inline(always)]
    fn check(&self, r0: usize, n: usize, cols: &Range<usize>) {
        debug_assert!(
            r0 + n <= self.rows && cols.end <= self.cols,
            "rows {r0}..{} and columns {cols:?} of a {} x {} matrix",
            r0 + n,
            self.rows,
            self.cols
        );
    }

    /// Rows from `r0` (to the matrix's last), columns `cols`, for the cell kernels.
    pub(crate) fn rows(self, r0: usize, cols: Range<usize>) -> Rows<F> {
        if cols.is_empty() {
            return Rows::empty();
        }
        self.check(r0, 0, &cols);
        Rows {
            ptr: self.ptr.wrapping_add(r0 * self.stride + cols.start),
            stride: self.stride,
            len: cols.len(),
            #[cfg(debug_assertions)]
            rows: self.rows.saturating_sub(r0),
        }
    }

    /// Rows `r0..r0 + n`, columns `cols`, to read.
    ///
    /// # Safety
    /// Inside the matrix; nothing writes these elements meanwhile.
    pub(crate) unsafe fn view<'a>(
        self,
        r0: usize,
        n: usize,
        cols: Range<usize>,
    ) -> ArrayView2<'a, F> {
        self.check(r0, n, &cols);
        ArrayView2::from_shape_ptr(
            (n, cols.len()).strides((self.stride, 1)),
            self.ptr.add(r0 * self.stride + cols.start),
        )
    }

    /// Rows `r0..r0 + n`, columns `cols`, to write.
    ///
    /// # Safety
    /// Inside the matrix; nothing else reads or writes these elements meanwhile.
    pub(crate) unsafe fn view_mut<'a>(
        self,
        r0: usize,
        n: usize,
        cols: Range<usize>,
    ) -> ArrayViewMut2<'a, F> {
        self.check(r0, n, &cols);
        ArrayViewMut2::from_shape_ptr(
            (n, cols.len()).strides((self.stride, 1)),
            self.ptr.add(r0 * self.stride + cols.start),
        )
    }
}

/// The rows of one step that a work item covers: `len` rows of the whole pass (all steps
/// stacked) from `r0`, `step` apart (see [`Batches::row_step`]), which are rows `lo..lo + len`
/// of the per-step buffers (states).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Part {
    /// The first row among the pass's rows.
    pub r0: usize,
    /// How many of the pass's rows apart the part's rows are.
    pub step: usize,
    /// The first row among the step's rows (of the per-step buffers).
    pub lo: usize,
    /// How many rows.
    pub len: usize,
}

impl Part {
    /// The rows of step `t` among the step's rows `rows` (all of them: `0..batch`); `None`
    /// if there are none (the sequences of `rows` have ended).
    pub(crate) fn of_step(batches: &Batches, t: usize, rows: Range<usize>) -> Option<Part> {
        let active = batches.active(t);
        let (lo, hi) = (rows.start.min(active), rows.end.min(active));
        (lo < hi).then_some(Part {
            r0: batches.row(t, lo),
            step: batches.row_step(),
            lo,
            len: hi - lo,
        })
    }

    /// The part's rows of `m`, a matrix of the pass's rows (all steps), and its columns `cols`.
    pub(crate) fn rows<F>(&self, m: Shared<F>, cols: Range<usize>) -> Rows<F> {
        m.every(self.r0, self.step).rows(0, cols)
    }

    /// The part's rows of `m` (as in [`Part::rows`]) to read.
    ///
    /// # Safety
    /// As [`Shared::view`].
    pub(crate) unsafe fn view<'a, F>(&self, m: Shared<F>, cols: Range<usize>) -> ArrayView2<'a, F> {
        m.every(self.r0, self.step).view(0, self.len, cols)
    }

    /// The part's rows of `m` (as in [`Part::rows`]) to write.
    ///
    /// # Safety
    /// As [`Shared::view_mut`].
    pub(crate) unsafe fn view_mut<'a, F>(
        &self,
        m: Shared<F>,
        cols: Range<usize>,
    ) -> ArrayViewMut2<'a, F> {
        m.every(self.r0, self.step).view_mut(0, self.len, cols)
    }

    /// The part's rows of `a`, a matrix of the pass's rows.
    pub(crate) fn of<'a, F>(&self, a: ArrayView2<'a, F>) -> ArrayView2<'a, F> {
        let last = self.r0 + (self.len - 1) * self.step;
        a.slice_move(s![self.r0..=last; self.step as isize, ..])
    }
}
