//! Micro-kernels: one `rows x NR` tile of `C (+)= A B` over `kc` steps of the inner dimension.
//!
//! A kernel reads `A` through a pointer and two strides (in place when its rows are
//! contiguous: row stride `lda`, column stride 1; or a packed micro-panel: row stride 1, column
//! stride [`MR`]) and `B` from one packed panel (`kc` rows of [`NR`] contiguous values,
//! zero-padded past the last column). It keeps the tile in registers for the
//! whole `kc` loop and touches `C` once, at the end: `C = acc` or `C += acc`.
//!
//! * [`portable`]: plain loops for any [`Float`]; the fallback for f64 and non-x86 targets,
//!   and the oracle the SIMD kernel is tested against.
//! * `avx2::kernel` (x86-64 only): f32 with AVX2 + FMA, 12 `ymm` accumulators for a 6 x 16
//!   tile.
//! * `avx512::kernel` (x86-64 only): f32 with AVX-512F, 6 `zmm` accumulators for the same
//!   tile and packed layout, `A` broadcast from memory inside each FMA; `avx512::pair`, 12
//!   accumulators for a 6 x 32 tile over two panels ([`Kernels::pair`]), which the driver
//!   prefers: a CPU with two 512-bit FMA pipes (Intel server cores) needs 8 chains in flight,
//!   where one pipe (Zen 4's double-pumped AVX-512) needs 4.
//!
//! [`kernels`] picks the widest the CPU has ([`super::isa()`]).

use super::Float;

/// Rows of the register tile (and of a packed `A` micro-panel).
pub const MR: usize = 6;
/// Columns of the register tile: the width of a packed `B` panel.
pub const NR: usize = 16;

/// A micro-kernel: `kernel(kc, a, rsa, csa, b, c, rsc, csc, cols, accumulate, prefetch)`
/// computes `C[i, j] (+)= sum_p A[i, p] * b[p * NR + j]` for `i < rows` (the kernel's `M`),
/// `j < cols`, with `A[i, p]` at `a + i*rsa + p*csa`; meanwhile it asks for the 64-byte
/// lines of `prefetch` (the share of the next panel of `B` that this tile fetches, see
/// [`Prefetch`]) to be brought into L2.
///
/// # Safety
/// `a + i*rsa + p*csa` must be readable for `i < rows`, `p < kc`; `b` must be readable for
/// `kc * NR` values; `c + i*rsc + j*csc` must be writable for `i < rows`, `j < cols <= NR`,
/// and alias neither `a` nor `b`. (`prefetch` may point anywhere: prefetches do not fault.)
pub type MicroKernel<F> = unsafe fn(
    usize,
    *const F,
    isize,
    isize,
    *const F,
    *mut F,
    isize,
    isize,
    usize,
    bool,
    Prefetch<F>,
);

/// Lines to prefetch during a kernel call: `lines` 64-byte lines from `start`.
///
/// The driver deals the lines of the next panel of `B` out to the tiles of the current one,
/// so that the requests are spread over the whole panel rather than bunched into its first
/// tile: when the weights stream from memory (the large presets' per-step products), this
/// keeps the kernel ~8% closer to its in-cache speed.
#[derive(Clone, Copy, Debug)]
pub struct Prefetch<F> {
    /// The first line.
    pub start: *const F,
    /// How many lines.
    pub lines: usize,
}

/// Panels of `B` that a one-row product runs at once ([`Kernels::one_row`]).
pub const ONE_ROW_PANELS: usize = 4;

/// A one-row kernel over several panels of `B`: `kernel(kc, a, csa, b, panel_step, c, csc,
/// cols, accumulate)` computes `C[0, j] (+)= sum_p A[0, p] * B_q[p * NR + j % NR]` for
/// `j < cols`, with panel `q = j / NR` at `b + q * panel_step` and `A[0, p]` at `a + p*csa`.
/// Each value is the same sum, in the same order, as [`Kernels::by_rows`]`[0]` gives panel by
/// panel (so the same bits); the panels' independent chains of FMAs hide the FMA latency that
/// leaves a one-row tile, a single chain per panel, at a quarter of the FMA throughput (a
/// batch of one: step-by-step inference).
///
/// # Safety
/// `a + p*csa` readable for `p < kc`; `b + q * panel_step` readable for `kc * NR` values for
/// every panel `q` the kernel runs (its entry in [`Kernels::one_row`]); `c + j*csc` writable
/// for `j < cols`, aliasing neither `a` nor `b`.
pub type OneRowKernel<F> =
    unsafe fn(usize, *const F, isize, *const F, usize, *mut F, isize, usize, bool);

/// The micro-kernels for one scalar type and instruction set: entry `r - 1` handles `r` rows.
#[derive(Clone, Copy)]
pub struct Kernels<F> {
    /// Kernels by row count, 1 to [`MR`].
    pub by_rows: [MicroKernel<F>; MR],
    /// One-row kernels by panel count, 1 to [`ONE_ROW_PANELS`].
    pub one_row: [OneRowKernel<F>; ONE_ROW_PANELS],
    /// Kernels by row count over two adjacent panels of `B` at once (a `rows x 2 NR` tile),
    /// where the instruction set needs the extra accumulator chains: a [`MicroKernel`] whose
    /// `b` holds two panels, the second `kc * NR` values after the first, and whose `cols` may
    /// reach `2 * NR`. Each value is the same sum, in the same order, as [`Kernels::by_rows`]
    /// gives panel by panel (so the same bits).
    pub pair: Option<[MicroKernel<F>; MR]>,
    /// The instruction set, for benchmarks and reports.
    pub name: &'static str,
}

/// The portable kernels for `F`.
pub fn portable<F: Float>() -> Kernels<F> {
    Kernels {
        by_rows: [
            portable_kernel::<F, 1>,
            portable_kernel::<F, 2>,
            portable_kernel::<F, 3>,
            portable_kernel::<F, 4>,
            portable_kernel::<F, 5>,
            portable_kernel::<F, 6>,
        ],
        one_row: [
            portable_one_row::<F, 1>,
            portable_one_row::<F, 2>,
            portable_one_row::<F, 3>,
            portable_one_row::<F, 4>,
        ],
        pair: None,
        name: "portable",
    }
}

/// The portable [`OneRowKernel`]: the one-row kernel panel by panel.
///
/// # Safety
/// See [`OneRowKernel`].
#[allow(clippy::too_many_arguments)]
unsafe fn portable_one_row<F: Float, const P: usize>(
    kc: usize,
    a: *const F,
    csa: isize,
    b: *const F,
    panel_step: usize,
    c: *mut F,
    csc: isize,
    cols: usize,
    accumulate: bool,
) {
    let none = Prefetch { start: b, lines: 0 };
    for q in 0..P {
        let cols_q = cols.saturating_sub(q * NR).min(NR);
        // SAFETY: panel `q` and its columns of `C`, as the caller vouched (OneRowKernel).
        unsafe {
            portable_kernel::<F, 1>(
                kc,
                a,
                0,
                csa,
                b.add(q * panel_step),
                c.offset((q * NR) as isize * csc),
                0,
                csc,
                cols_q,
                accumulate,
                none,
            )
        };
    }
}

/// The fastest kernels this CPU runs for `F` ([`super::isa()`]): AVX-512 or AVX2 + FMA for f32
/// on x86-64, the portable loops otherwise.
pub fn kernels<F: Float>() -> Kernels<F> {
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>() {
        let k: Kernels<f32> = match super::isa() {
            super::Isa::Avx512 => avx512::kernels(),
            super::Isa::Avx2 => avx2::kernels(),
            super::Isa::Scalar => return portable(),
        };
        // SAFETY: `F` is `f32` (same TypeId), so `Kernels<f32>` and `Kernels<F>` are the same
        // type and the copy is a plain bitwise copy of function pointers.
        return unsafe { std::mem::transmute_copy::<Kernels<f32>, Kernels<F>>(&k) };
    }
    portable()
}

/// The kernels of `isa` for f32, when this CPU has it (whatever `RNN_MAX_ISA` says): for the
/// tests, which check every kernel the CPU can run.
#[cfg(test)]
pub(crate) fn kernels_of(isa: super::Isa) -> Option<Kernels<f32>> {
    use super::Isa;
    if super::isa::detected() < isa {
        return None;
    }
    Some(match isa {
        Isa::Scalar => portable(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::kernels(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::kernels(),
        #[cfg(not(target_arch = "x86_64"))]
        _ => return None,
    })
}

/// Stores the accumulated tile: `C = acc` or `C += acc`, rows `< M`, columns `< cols`.
///
/// # Safety
/// As for [`MicroKernel`]: `c + i*rsc + j*csc` writable for `i < M`, `j < cols`.
#[inline(always)]
unsafe fn store_tile<F: Float, const M: usize>(
    acc: &[[F; NR]; M],
    c: *mut F,
    rsc: isize,
    csc: isize,
    cols: usize,
    accumulate: bool,
) {
    for (i, row) in acc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate().take(cols) {
            // SAFETY: i < M and j < cols, inside the tile the caller vouched for.
            let p = unsafe { c.offset(i as isize * rsc + j as isize * csc) };
            // SAFETY: as above; `p` is valid for reads and writes.
            unsafe { *p = if accumulate { *p + v } else { v } };
        }
    }
}

/// Stores a [`OneRowKernel`]'s row: panel `q`'s values into columns `q * NR..` of `C` (of
/// `cols` in all), `C = acc` or `C += acc`.
///
/// # Safety
/// As for [`OneRowKernel`]: `c + j*csc` writable for `j < cols`.
#[inline(always)]
unsafe fn store_one_row<F: Float, const P: usize>(
    panels: &[[F; NR]; P],
    c: *mut F,
    csc: isize,
    cols: usize,
    accumulate: bool,
) {
    for (q, panel) in panels.iter().enumerate() {
        let cols_q = cols.saturating_sub(q * NR).min(NR);
        // SAFETY: columns `q * NR..+cols_q` of the row, within the caller's `cols`.
        unsafe {
            let c_q = c.offset((q * NR) as isize * csc);
            store_tile(std::array::from_ref(panel), c_q, 0, csc, cols_q, accumulate)
        };
    }
}

/// Plain loops over the packed layout; the compiler vectorises the `NR`-wide inner loop with
/// the target's baseline SIMD.
///
/// # Safety
/// See [`MicroKernel`].
#[allow(clippy::too_many_arguments)]
unsafe fn portable_kernel<F: Float, const M: usize>(
    kc: usize,
    a: *const F,
    rsa: isize,
    csa: isize,
    b: *const F,
    c: *mut F,
    rsc: isize,
    csc: isize,
    cols: usize,
    accumulate: bool,
    _prefetch: Prefetch<F>,
) {
    let mut acc = [[F::zero(); NR]; M];
    // SAFETY: `b` holds `kc * NR` readable values (kernel contract).
    let b = unsafe { std::slice::from_raw_parts(b, kc * NR) };
    for (p, bp) in b.chunks_exact(NR).enumerate() {
        for (i, acc_row) in acc.iter_mut().enumerate() {
            // SAFETY: i < M and p < kc (kernel contract on `a`).
            let ai = unsafe { *a.offset(i as isize * rsa + p as isize * csa) };
            for (x, &bj) in acc_row.iter_mut().zip(bp) {
                *x += ai * bj;
            }
        }
    }
    // SAFETY: the kernel contract on `c`.
    unsafe { store_tile(&acc, c, rsc, csc, cols, accumulate) };
}

/// What the x86-64 kernels share around their register loops: the `C` tile prefetch, the row
/// pointers of `A`, and the dealing of the next `B` panel's lines over the steps. Only SSE
/// prefetches and pointer arithmetic: nothing here needs the kernels' target features.
#[cfg(target_arch = "x86_64")]
mod tile {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};

    use super::{Prefetch, NR};

    /// Asks for the lines of an `M x NR` tile of `C` (first and last value of each row), so
    /// that they arrive while the tile is computed: `C` is touched only at the end, and for
    /// tall products it is not in cache.
    #[inline(always)]
    pub(super) fn prefetch_c<const M: usize>(c: *mut f32, rsc: isize, csc: isize) {
        for i in 0..M {
            let row = c.wrapping_offset(i as isize * rsc);
            // SAFETY: prefetches do not fault, whatever the address.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(row.cast());
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_offset((NR as isize - 1) * csc).cast());
            }
        }
    }

    /// One pointer per row of `A`, so that with one offset along k every broadcast is
    /// `[row + 4 * offset]` and a step costs one add for `A`, not a chain of adds through the
    /// rows (what the compiler makes of `a + i * rsa`: ~10% slower on every shape).
    #[inline(always)]
    pub(super) fn row_pointers<const M: usize>(a: *const f32, rsa: isize) -> [*const f32; M] {
        std::array::from_fn(|i| a.wrapping_offset(i as isize * rsa))
    }

    /// Deals the lines of a [`Prefetch`] out over the `kc` steps of a tile: one line after
    /// every `every` steps, the rest after the loop, so that the register loop runs in
    /// stretches without a countdown inside them.
    pub(super) struct Dealer {
        /// Steps between two lines.
        pub every: usize,
        line: *const f32,
        left: usize,
    }

    impl Dealer {
        #[inline(always)]
        pub fn new(kc: usize, prefetch: Prefetch<f32>) -> Self {
            Dealer {
                every: kc.checked_div(prefetch.lines).unwrap_or(usize::MAX).max(1),
                line: prefetch.start,
                left: prefetch.lines,
            }
        }

        /// Asks for the next line, if any is left (after a stretch of steps).
        #[inline(always)]
        pub fn one(&mut self) {
            if self.left > 0 {
                self.line_now();
                self.left -= 1;
            }
        }

        /// Asks for every line left (after the loop).
        #[inline(always)]
        pub fn rest(mut self) {
            for _ in 0..self.left {
                self.line_now();
            }
        }

        #[inline(always)]
        fn line_now(&mut self) {
            // SAFETY: prefetches do not fault, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(self.line.cast()) };
            self.line = self.line.wrapping_add(16);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The f32 kernel for AVX2 + FMA: a 6 x 16 tile is 12 `ymm` accumulators; each step of
    //! the inner dimension loads two `ymm` of `B`, broadcasts 6 values of `A` and issues 12
    //! FMAs, enough independent chains to keep both FMA pipes busy (latency 4 or 5, 2 per
    //! cycle).

    use super::{tile, Kernels, Prefetch, MR, NR};
    use std::arch::x86_64::*;

    pub fn kernels() -> Kernels<f32> {
        Kernels {
            by_rows: [
                kernel::<1>,
                kernel::<2>,
                kernel::<3>,
                kernel::<4>,
                kernel::<5>,
                kernel::<6>,
            ],
            one_row: [one_row::<1>, one_row::<2>, one_row::<3>, one_row::<4>],
            pair: None,
            name: "avx2",
        }
    }

    /// See [`super::OneRowKernel`]: two `ymm` accumulators per panel.
    ///
    /// # Safety
    /// The [`super::OneRowKernel`] contract, and the CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn one_row<const P: usize>(
        kc: usize,
        a: *const f32,
        csa: isize,
        b: *const f32,
        panel_step: usize,
        c: *mut f32,
        csc: isize,
        cols: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; P];
        let panels: [*const f32; P] = std::array::from_fn(|q| b.wrapping_add(q * panel_step));
        for k in 0..kc {
            // SAFETY: `a + k*csa` and the panels' step `k` lie within the kernel contract.
            unsafe {
                let ai = _mm256_broadcast_ss(&*a.offset(k as isize * csa));
                for (panel, acc) in panels.iter().zip(acc.iter_mut()) {
                    let b_k = panel.add(k * NR);
                    acc[0] = _mm256_fmadd_ps(ai, _mm256_loadu_ps(b_k), acc[0]);
                    acc[1] = _mm256_fmadd_ps(ai, _mm256_loadu_ps(b_k.add(8)), acc[1]);
                }
            }
        }
        let mut row = [[0.0f32; NR]; P];
        for (panel, acc) in row.iter_mut().zip(&acc) {
            // SAFETY: `panel` is 16 floats on the stack.
            unsafe {
                _mm256_storeu_ps(panel.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(panel.as_mut_ptr().add(8), acc[1]);
            }
        }
        // SAFETY: the kernel contract on `c`.
        unsafe { super::store_one_row(&row, c, csc, cols, accumulate) };
    }

    /// See [`super::MicroKernel`].
    ///
    /// # Safety
    /// The [`super::MicroKernel`] contract, and the CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel<const M: usize>(
        kc: usize,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
        cols: usize,
        accumulate: bool,
        prefetch: Prefetch<f32>,
    ) {
        const { assert!(M >= 1 && M <= MR && NR == 16) };
        tile::prefetch_c::<M>(c, rsc, csc);
        let mut acc = [[_mm256_setzero_ps(); 2]; M];
        let rows = tile::row_pointers::<M>(a, rsa);
        let mut offset = 0isize;
        let mut b = b;
        let mut dealer = tile::Dealer::new(kc, prefetch);
        let mut steps_left = kc;
        while steps_left > 0 {
            let run = dealer.every.min(steps_left);
            for _ in 0..run {
                // SAFETY (whole block): `b` walks the `kc * NR` panel, `rows[i] + offset`
                // walks `kc` columns of row `i < M`, both within the kernel contract.
                unsafe {
                    let b0 = _mm256_loadu_ps(b);
                    let b1 = _mm256_loadu_ps(b.add(8));
                    for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                        let ai = _mm256_broadcast_ss(&*row.offset(offset));
                        acc[0] = _mm256_fmadd_ps(ai, b0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(ai, b1, acc[1]);
                    }
                    offset += csa;
                    b = b.add(NR);
                }
            }
            steps_left -= run;
            dealer.one();
        }
        dealer.rest();
        if cols == NR && csc == 1 {
            for (i, acc) in acc.iter().enumerate() {
                // SAFETY: row `i < M` of the tile is 16 contiguous writable floats.
                unsafe {
                    let p = c.offset(i as isize * rsc);
                    let (mut v0, mut v1) = (acc[0], acc[1]);
                    if accumulate {
                        v0 = _mm256_add_ps(_mm256_loadu_ps(p), v0);
                        v1 = _mm256_add_ps(_mm256_loadu_ps(p.add(8)), v1);
                    }
                    _mm256_storeu_ps(p, v0);
                    _mm256_storeu_ps(p.add(8), v1);
                }
            }
        } else {
            let mut tile = [[0.0f32; NR]; M];
            for (t, acc) in tile.iter_mut().zip(&acc) {
                // SAFETY: `t` is 16 floats on the stack.
                unsafe {
                    _mm256_storeu_ps(t.as_mut_ptr(), acc[0]);
                    _mm256_storeu_ps(t.as_mut_ptr().add(8), acc[1]);
                }
            }
            // SAFETY: the kernel contract on `c`.
            unsafe { super::store_tile(&tile, c, rsc, csc, cols, accumulate) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The f32 kernel for AVX-512F: a 6 x 16 tile is 6 `zmm` accumulators; each step of the
    //! inner dimension loads one `zmm` of `B` and issues 6 FMAs whose `A` operand is an
    //! embedded broadcast from memory (`{1to16}`), 7 instructions where AVX2 needs 20.

    use super::{tile, Kernels, Prefetch, MR, NR};
    use std::arch::x86_64::*;

    pub fn kernels() -> Kernels<f32> {
        Kernels {
            by_rows: [
                kernel::<1>,
                kernel::<2>,
                kernel::<3>,
                kernel::<4>,
                kernel::<5>,
                kernel::<6>,
            ],
            one_row: [one_row::<1>, one_row::<2>, one_row::<3>, one_row::<4>],
            pair: Some([
                pair::<1>, pair::<2>, pair::<3>, pair::<4>, pair::<5>, pair::<6>,
            ]),
            name: "avx512",
        }
    }

    /// See [`super::OneRowKernel`]: one `zmm` accumulator per panel.
    ///
    /// # Safety
    /// The [`super::OneRowKernel`] contract, and the CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn one_row<const P: usize>(
        kc: usize,
        a: *const f32,
        csa: isize,
        b: *const f32,
        panel_step: usize,
        c: *mut f32,
        csc: isize,
        cols: usize,
        accumulate: bool,
    ) {
        let mut acc = [_mm512_setzero_ps(); P];
        let panels: [*const f32; P] = std::array::from_fn(|q| b.wrapping_add(q * panel_step));
        for k in 0..kc {
            // SAFETY: `a + k*csa` and the panels' step `k` lie within the kernel contract.
            unsafe {
                let ai = _mm512_set1_ps(*a.offset(k as isize * csa));
                for (panel, acc) in panels.iter().zip(acc.iter_mut()) {
                    *acc = _mm512_fmadd_ps(ai, _mm512_loadu_ps(panel.add(k * NR)), *acc);
                }
            }
        }
        let mut row = [[0.0f32; NR]; P];
        for (panel, &acc) in row.iter_mut().zip(&acc) {
            // SAFETY: `panel` is 16 floats on the stack.
            unsafe { _mm512_storeu_ps(panel.as_mut_ptr(), acc) };
        }
        // SAFETY: the kernel contract on `c`.
        unsafe { super::store_one_row(&row, c, csc, cols, accumulate) };
    }

    /// See [`super::MicroKernel`].
    ///
    /// # Safety
    /// The [`super::MicroKernel`] contract, and the CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel<const M: usize>(
        kc: usize,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
        cols: usize,
        accumulate: bool,
        prefetch: Prefetch<f32>,
    ) {
        const { assert!(M >= 1 && M <= MR && NR == 16) };
        tile::prefetch_c::<M>(c, rsc, csc);
        let mut acc = [_mm512_setzero_ps(); M];
        let rows = tile::row_pointers::<M>(a, rsa);
        let mut offset = 0isize;
        let mut b = b;
        let mut dealer = tile::Dealer::new(kc, prefetch);
        let mut steps_left = kc;
        while steps_left > 0 {
            let run = dealer.every.min(steps_left);
            for _ in 0..run {
                // SAFETY (whole block): `b` walks the `kc * NR` panel, `rows[i] + offset`
                // walks `kc` columns of row `i < M`, both within the kernel contract.
                unsafe {
                    let b0 = _mm512_loadu_ps(b);
                    for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                        let ai = _mm512_set1_ps(*row.offset(offset));
                        *acc = _mm512_fmadd_ps(ai, b0, *acc);
                    }
                    offset += csa;
                    b = b.add(NR);
                }
            }
            steps_left -= run;
            dealer.one();
        }
        dealer.rest();
        // SAFETY: the kernel contract on `c`.
        unsafe { store(&acc, c, rsc, csc, cols, accumulate) };
    }

    /// Stores a tile of `M` rows of 16 accumulators: `C = acc` or `C += acc`, columns
    /// `< cols` (at most 16; none for 0).
    ///
    /// # Safety
    /// `c + i*rsc + j*csc` writable for `i < M`, `j < cols`; the CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store<const M: usize>(
        acc: &[__m512; M],
        c: *mut f32,
        rsc: isize,
        csc: isize,
        cols: usize,
        accumulate: bool,
    ) {
        if csc == 1 {
            // Columns past `cols` are masked off: no tile on the stack for a narrow edge.
            let mask: __mmask16 = if cols >= NR { !0 } else { (1u16 << cols) - 1 };
            for (i, &acc) in acc.iter().enumerate() {
                // SAFETY: row `i < M` of the tile has `cols` contiguous writable floats; the
                // masked load and store touch only those.
                unsafe {
                    let p = c.offset(i as isize * rsc);
                    let v = if accumulate {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, p), acc)
                    } else {
                        acc
                    };
                    _mm512_mask_storeu_ps(p, mask, v);
                }
            }
        } else {
            let mut tile = [[0.0f32; NR]; M];
            for (t, &acc) in tile.iter_mut().zip(acc) {
                // SAFETY: `t` is 16 floats on the stack.
                unsafe { _mm512_storeu_ps(t.as_mut_ptr(), acc) };
            }
            // SAFETY: the caller's contract on `c`.
            unsafe { super::store_tile(&tile, c, rsc, csc, cols, accumulate) };
        }
    }

    /// See [`super::Kernels::pair`]: a 6 x 32 tile is 12 `zmm` accumulators, two per row, so
    /// that CPUs with two 512-bit FMA pipes (latency 4: 8 chains in flight) stay busy, where
    /// the 6 chains of [`kernel`] leave them a quarter idle; each step loads two `zmm` of `B`
    /// and broadcasts 6 values of `A` for 12 FMAs.
    ///
    /// # Safety
    /// The [`super::Kernels::pair`] contract, and the CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pair<const M: usize>(
        kc: usize,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
        cols: usize,
        accumulate: bool,
        prefetch: Prefetch<f32>,
    ) {
        const { assert!(M >= 1 && M <= MR && NR == 16) };
        tile::prefetch_c::<M>(c, rsc, csc);
        tile::prefetch_c::<M>(c.wrapping_offset(NR as isize * csc), rsc, csc);
        let mut acc = [[_mm512_setzero_ps(); 2]; M];
        let rows = tile::row_pointers::<M>(a, rsa);
        let mut offset = 0isize;
        let mut b0 = b;
        let mut b1 = b.wrapping_add(kc * NR);
        let mut dealer = tile::Dealer::new(kc, prefetch);
        let mut steps_left = kc;
        while steps_left > 0 {
            let run = dealer.every.min(steps_left);
            for _ in 0..run {
                // SAFETY (whole block): `b0` and `b1` walk the two `kc * NR` panels,
                // `rows[i] + offset` walks `kc` columns of row `i < M`, within the contract.
                unsafe {
                    let v0 = _mm512_loadu_ps(b0);
                    let v1 = _mm512_loadu_ps(b1);
                    for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                        let ai = _mm512_set1_ps(*row.offset(offset));
                        acc[0] = _mm512_fmadd_ps(ai, v0, acc[0]);
                        acc[1] = _mm512_fmadd_ps(ai, v1, acc[1]);
                    }
                    offset += csa;
                    b0 = b0.add(NR);
                    b1 = b1.add(NR);
                }
            }
            steps_left -= run;
            dealer.one();
        }
        dealer.rest();
        // SAFETY: the kernel contract on `c`: columns `..cols` of the tile, the first panel's
        // at `c`, the second's `NR` columns on.
        unsafe {
            store(
                &acc.map(|row| row[0]),
                c,
                rsc,
                csc,
                cols.min(NR),
                accumulate,
            );
            let c_hi = c.wrapping_offset(NR as isize * csc);
            store(
                &acc.map(|row| row[1]),
                c_hi,
                rsc,
                csc,
                cols.saturating_sub(NR),
                accumulate,
            );
        }
    }
}
