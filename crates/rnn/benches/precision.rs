//! Reduced-precision products against f32, in GFLOP/s (2 per multiply-add, int8 included),
//! with the machine's peaks measured in the same run.
//!
//! `cargo bench -p rnn --bench precision [-- FILTER...]`: `peak` runs the peak probes only;
//! `layers` the whole-layer prototype below; `layers DIR` its errors on the weights and
//! inputs that `tools/bench_precision.py --dump DIR` wrote (the peers' own); other filters
//! pick shapes by label (`step`, `b1`, `large`...).
//!
//! * Peaks: independent chains (12, enough to cover latency x pipes) of one instruction on
//!   512-bit registers: `vfmadd231ps` (f32, 32 flops), `vdpbf16ps` (bf16, 64 flops),
//!   `vpdpbusd` (int8, 128 ops), on 1 thread and on 2 (a rayon pool of 2). `vdpbf16ps` is
//!   probed only when `cpuid` reports AVX512_BF16 or `RNN_ASSUME_AVX512BF16=1` (some virtual
//!   machines hide the bit of a CPU that runs it).
//! * Products `C (m, n) = A (m, k) B (k, n)` with `B` packed once, outside the timing (as the
//!   engine packs its weights once): `matmul_packed` (f32), `matmul_bf16` and `matmul_int8`
//!   (their kernel named in the header), each as a percentage of its own peak (bf16 emulated
//!   with f32 FMAs: of the f32 peak) on as many threads. The candidates run interleaved, short
//!   batches in rounds; each number is a candidate's best batch.
//! * `layers`: one recurrent layer's inference (PyTorch's equations and initialisation, input
//!   uniform in [-1, 1], zero initial state) written here on top of the products: one product
//!   `X W_ih^T` for all steps, then per step `h W_hh^T` and the gate math in f32 (the engine's
//!   vectorised activations), with the products in f32, bf16 or int8. Prints each one's time
//!   and the largest absolute error of the outputs against the same layer in f64: what the
//!   engine will gain and pay when it runs these kernels (the engine itself adds fusion and
//!   threading of the gate math, not this).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ndarray::Array2;
use rnn::linalg::{
    bf16_kernel_name, int8_kernel_name, matmul_bf16, matmul_int8, matmul_packed, PackedBf16,
    PackedInt8, PackedWeights,
};

/// Runs the candidates interleaved for about `budget`; each one's best seconds per call.
fn race(budget: Duration, candidates: &mut [&mut dyn FnMut(usize)]) -> Vec<f64> {
    let per_batch: Vec<usize> = candidates
        .iter_mut()
        .map(|f| {
            f(2);
            let t = Instant::now();
            f(1);
            ((2e-3 / t.elapsed().as_secs_f64().max(1e-8)) as usize).max(1)
        })
        .collect();
    let mut best = vec![f64::INFINITY; candidates.len()];
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < 5 || start.elapsed() < budget {
        for ((f, &reps), b) in candidates.iter_mut().zip(&per_batch).zip(&mut best) {
            let t = Instant::now();
            f(reps);
            *b = b.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        rounds += 1;
    }
    best
}

/// Iterations of a peak probe per call.
const PEAK_ITERS: usize = 20_000;

#[cfg(target_arch = "x86_64")]
mod probes {
    //! 12 independent chains of one 512-bit instruction, `iters` times.

    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub fn fma(iters: usize) -> f32 {
        let mut acc = [_mm512_set1_ps(0.0); 12];
        let (x, y) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, x, y);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    #[target_feature(enable = "avx512f")]
    pub fn dpbf16(iters: usize) -> f32 {
        let mut acc = [_mm512_set1_ps(0.0); 12];
        let (x, y) = (_mm512_set1_epi16(0x3f80), _mm512_set1_epi16(0x3400));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                // SAFETY: register operands only; the caller checked the CPU runs it.
                unsafe {
                    std::arch::asm!(
                        "vdpbf16ps {a}, {x}, {y}",
                        a = inout(zmm_reg) *a,
                        x = in(zmm_reg) x,
                        y = in(zmm_reg) y,
                        options(pure, nomem, nostack, preserves_flags),
                    )
                };
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub fn dpbusd(iters: usize) -> i32 {
        let mut acc = [_mm512_set1_epi32(0); 12];
        let (x, y) = (_mm512_set1_epi8(3), _mm512_set1_epi8(-2));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_dpbusd_epi32(*a, x, y);
            }
        }
        acc.iter()
            .map(|&a| _mm512_reduce_add_epi32(a))
            .fold(0, i32::wrapping_add)
    }
}

/// (name, flops per call of the probe, the probe) for the peaks this CPU runs.
#[allow(clippy::type_complexity)]
fn peak_probes() -> Vec<(&'static str, f64, Box<dyn Fn() + Sync>)> {
    let mut out: Vec<(&'static str, f64, Box<dyn Fn() + Sync>)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let chains = (PEAK_ITERS * 12) as f64;
        if is_x86_feature_detected!("avx512f") {
            // SAFETY (each probe): the features were detected (or assumed, for vdpbf16ps).
            out.push((
                "f32 FMA",
                chains * 32.0,
                Box::new(|| {
                    black_box(unsafe { probes::fma(black_box(PEAK_ITERS)) });
                }),
            ));
            let bf16 = is_x86_feature_detected!("avx512bf16")
                || std::env::var("RNN_ASSUME_AVX512BF16").as_deref() == Ok("1");
            if bf16 {
                out.push((
                    "bf16 vdpbf16ps",
                    chains * 64.0,
                    Box::new(|| {
                        black_box(unsafe { probes::dpbf16(black_box(PEAK_ITERS)) });
                    }),
                ));
            }
            if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw") {
                out.push((
                    "int8 vpdpbusd",
                    chains * 128.0,
                    Box::new(|| {
                        black_box(unsafe { probes::dpbusd(black_box(PEAK_ITERS)) });
                    }),
                ));
            }
        }
    }
    out
}

fn random(m: usize, n: usize, seed: u64) -> Array2<f32> {
    let mut rng = rnn::Rng::new(seed);
    Array2::from_shape_fn((m, n), |_| rng.uniform(-1.0, 1.0))
}

/// (label, m, k, n): the recurrent products of the workloads.
const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("medium lstm step  H.W_hh^T", 64, 512, 2048),
    ("medium lstm X.W_ih^T (10 steps)", 640, 256, 2048),
    ("issue 64x256x2048", 64, 256, 2048),
    ("large lstm step  H.W_hh^T", 64, 1024, 4096),
    ("large lstm X.W_ih^T (10 steps)", 640, 1024, 4096),
    ("b1 step lstm 512", 1, 512, 2048),
    ("b1 step lstm 1024", 1, 1024, 4096),
];

/// A layer's products in one precision: `X W_ih^T` (all steps) and `h W_hh^T` (one step).
trait Products<F> {
    fn input(&self, c: &mut ndarray::ArrayViewMut2<'_, F>, a: &ndarray::ArrayView2<'_, F>);
    fn hidden(&self, c: &mut ndarray::ArrayViewMut2<'_, F>, a: &ndarray::ArrayView2<'_, F>);
}

/// f64 products (the reference), through `ndarray`.
struct F64Products(Array2<f64>, Array2<f64>);

impl Products<f64> for F64Products {
    fn input(&self, c: &mut ndarray::ArrayViewMut2<'_, f64>, a: &ndarray::ArrayView2<'_, f64>) {
        ndarray::linalg::general_mat_mul(1.0, a, &self.0.t(), 0.0, c);
    }
    fn hidden(&self, c: &mut ndarray::ArrayViewMut2<'_, f64>, a: &ndarray::ArrayView2<'_, f64>) {
        ndarray::linalg::general_mat_mul(1.0, a, &self.1.t(), 0.0, c);
    }
}

/// f32 products in one precision, weights packed once.
enum F32Products {
    F32(PackedWeights<f32>, PackedWeights<f32>),
    Bf16(PackedBf16, PackedBf16),
    Int8(PackedInt8, PackedInt8),
}

impl F32Products {
    fn new(precision: &str, w_ih: &Array2<f32>, w_hh: &Array2<f32>) -> Self {
        let (i, h) = (w_ih.view(), w_hh.view());
        match precision {
            "f32" => Self::F32(PackedWeights::transposed(&i), PackedWeights::transposed(&h)),
            "bf16" => Self::Bf16(PackedBf16::transposed(&i), PackedBf16::transposed(&h)),
            _ => Self::Int8(
                PackedInt8::quantize_transposed(&i),
                PackedInt8::quantize_transposed(&h),
            ),
        }
    }

    fn run(
        &self,
        hidden: bool,
        c: &mut ndarray::ArrayViewMut2<'_, f32>,
        a: &ndarray::ArrayView2<'_, f32>,
    ) {
        match self {
            Self::F32(i, h) => matmul_packed(c, a, if hidden { h } else { i }, false),
            Self::Bf16(i, h) => matmul_bf16(c, a, if hidden { h } else { i }, false),
            Self::Int8(i, h) => matmul_int8(c, a, if hidden { h } else { i }, false),
        }
    }
}

impl Products<f32> for F32Products {
    fn input(&self, c: &mut ndarray::ArrayViewMut2<'_, f32>, a: &ndarray::ArrayView2<'_, f32>) {
        self.run(false, c, a)
    }
    fn hidden(&self, c: &mut ndarray::ArrayViewMut2<'_, f32>, a: &ndarray::ArrayView2<'_, f32>) {
        self.run(true, c, a)
    }
}

/// One layer's inference: `x` (T*B, I) time-major, biases `b_ih`, `b_hh` (G*H); returns the
/// outputs (T*B, H). PyTorch's gate orders: LSTM i, f, g, o; GRU r, z, n.
fn layer<F: rnn::engine::Activations>(
    cell: &str,
    batch: usize,
    hidden: usize,
    x: &Array2<F>,
    b_ih: &[F],
    b_hh: &[F],
    prods: &dyn Products<F>,
) -> Array2<F> {
    let (rows, gh) = (x.nrows(), b_ih.len());
    let h_n = hidden;
    let mut xw = Array2::<F>::zeros((rows, gh));
    prods.input(&mut xw.view_mut(), &x.view());
    for mut row in xw.rows_mut() {
        for (j, v) in row.iter_mut().enumerate() {
            *v += b_ih[j] + if cell == "gru" { F::zero() } else { b_hh[j] };
        }
    }
    let mut out = Array2::<F>::zeros((rows, h_n));
    let mut h = Array2::<F>::zeros((batch, h_n));
    let mut c = Array2::<F>::zeros((batch, h_n));
    let mut hw = Array2::<F>::zeros((batch, gh));
    let mut gates = vec![F::zero(); gh];
    for t in 0..rows / batch {
        prods.hidden(&mut hw.view_mut(), &h.view());
        for b in 0..batch {
            let xr = xw.row(t * batch + b);
            let xr = xr.as_slice().unwrap();
            let hr = hw.row_mut(b).into_slice().unwrap();
            let hb = h.row_mut(b).into_slice().unwrap();
            match cell {
                "lstm" => {
                    let cb = c.row_mut(b).into_slice().unwrap();
                    let g = &mut gates;
                    F::sigmoid_of_sum(&mut g[..2 * h_n], [&xr[..2 * h_n], &hr[..2 * h_n]]);
                    F::tanh_of_sum(
                        &mut g[2 * h_n..3 * h_n],
                        [&xr[2 * h_n..3 * h_n], &hr[2 * h_n..3 * h_n]],
                    );
                    F::sigmoid_of_sum(&mut g[3 * h_n..], [&xr[3 * h_n..], &hr[3 * h_n..]]);
                    for j in 0..h_n {
                        cb[j] = g[h_n + j] * cb[j] + g[j] * g[2 * h_n + j];
                        hr[j] = cb[j];
                    }
                    F::tanh_in_place(&mut hr[..h_n]);
                    for j in 0..h_n {
                        hb[j] = g[3 * h_n + j] * hr[j];
                    }
                }
                "gru" => {
                    for (v, &bias) in hr.iter_mut().zip(b_hh) {
                        *v += bias;
                    }
                    let g = &mut gates;
                    F::sigmoid_of_sum(&mut g[..2 * h_n], [&xr[..2 * h_n], &hr[..2 * h_n]]);
                    for j in 0..h_n {
                        hr[2 * h_n + j] *= g[j];
                    }
                    F::tanh_of_sum(&mut g[2 * h_n..], [&xr[2 * h_n..], &hr[2 * h_n..]]);
                    for j in 0..h_n {
                        let z = g[h_n + j];
                        hb[j] = (F::one() - z) * g[2 * h_n + j] + z * hb[j];
                    }
                }
                _ => {
                    F::tanh_of_sum(&mut hb[..], [xr, &hr[..]]);
                }
            }
            out.row_mut(t * batch + b).assign(&h.row(b));
        }
    }
    out
}

/// Reads tensor `name` of a safetensors file as f64 values with its shape.
fn tensor(st: &safetensors::SafeTensors<'_>, name: &str) -> (Vec<f64>, Vec<usize>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let values = match t.dtype() {
        safetensors::Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        safetensors::Dtype::F64 => t
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        other => panic!("{name}: {other:?}"),
    };
    (values, t.shape().to_vec())
}

/// `layers DIR`: the errors of the f32, bf16 and int8 layers against PyTorch's f64 output, on
/// the weights and inputs `tools/bench_precision.py --dump DIR` wrote (the peers' own).
fn layers_on_files(dir: &str) {
    println!("max |error| against PyTorch in f64, on the peers' weights and inputs ({dir})");
    println!(
        "{:<28} | {:>9} | {:>9} | {:>9}",
        "workload", "f32", "bf16", "int8"
    );
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    for path in paths {
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let cell = stem.split('_').next().unwrap().to_string();
        let f32_of = |name: &str| {
            let (v, shape) = tensor(&st, name);
            let cols = if shape.len() == 2 { shape[1] } else { shape[0] };
            Array2::from_shape_vec(
                (v.len() / cols, cols),
                v.iter().map(|&x| x as f32).collect(),
            )
            .unwrap()
        };
        let (w_ih, w_hh) = (f32_of("weight_ih_l0"), f32_of("weight_hh_l0"));
        let (b_ih, b_hh) = (f32_of("bias_ih_l0"), f32_of("bias_hh_l0"));
        let x = f32_of("x");
        let (want, shape) = tensor(&st, "ref");
        let hidden = shape[1];
        let batch = match stem.rsplit('_').next().unwrap() {
            "small" => 32,
            _ => 64,
        };
        let errs: Vec<String> = ["f32", "bf16", "int8"]
            .iter()
            .map(|p| {
                let prods = F32Products::new(p, &w_ih, &w_hh);
                let (bi, bh) = (b_ih.as_slice().unwrap(), b_hh.as_slice().unwrap());
                let got = layer(&cell, batch, hidden, &x, bi, bh, &prods);
                let e = got.iter().zip(&want).map(|(&a, &b)| (a as f64 - b).abs());
                format!("{:>9.1e}", e.fold(0.0, f64::max))
            })
            .collect();
        println!("{stem:<28} | {} | {} | {}", errs[0], errs[1], errs[2]);
    }
}

/// The `layers` table: time and error of one layer's inference per precision.
fn layers(pool: &rayon::ThreadPool, threads: usize) {
    println!(
        "\nlayers ({threads} threads): ms (best run) and max |error| against f64; bf16 {}, int8 {}",
        bf16_kernel_name(),
        int8_kernel_name()
    );
    println!(
        "{:<6} {:<7} | {:>18} | {:>18} | {:>18}",
        "cell", "preset", "f32", "bf16", "int8"
    );
    let presets = [
        ("small", 32, 50, 64, 128),
        ("medium", 64, 100, 256, 512),
        ("large", 64, 100, 1024, 1024),
    ];
    for (preset, batch, seq, input, hidden) in presets {
        for (cell, g) in [("lstm", 4), ("gru", 3), ("rnn", 1)] {
            let mut rng = rnn::Rng::new(7);
            let bound = 1.0 / (hidden as f32).sqrt();
            let mut uni = |r: usize, c: usize, lim: f32| {
                Array2::from_shape_fn((r, c), |_| rng.uniform(-lim, lim))
            };
            let (w_ih, w_hh) = (
                uni(g * hidden, input, bound),
                uni(g * hidden, hidden, bound),
            );
            let (b_ih, b_hh) = (uni(1, g * hidden, bound), uni(1, g * hidden, bound));
            let x = uni(seq * batch, input, 1.0);
            let to64 = |a: &Array2<f32>| a.mapv(|v| v as f64);
            let p64 = F64Products(to64(&w_ih), to64(&w_hh));
            let (bi64, bh64) = (to64(&b_ih), to64(&b_hh));
            let want = pool.install(|| {
                layer(
                    cell,
                    batch,
                    hidden,
                    &to64(&x),
                    bi64.as_slice().unwrap(),
                    bh64.as_slice().unwrap(),
                    &p64,
                )
            });
            let mut cells = Vec::new();
            let prods: Vec<F32Products> = ["f32", "bf16", "int8"]
                .iter()
                .map(|p| F32Products::new(p, &w_ih, &w_hh))
                .collect();
            let (bi, bh) = (b_ih.as_slice().unwrap(), b_hh.as_slice().unwrap());
            let errs: Vec<f64> = prods
                .iter()
                .map(|p| {
                    let got = pool.install(|| layer(cell, batch, hidden, &x, bi, bh, p));
                    got.iter()
                        .zip(&want)
                        .map(|(&a, &b)| (a as f64 - b).abs())
                        .fold(0.0, f64::max)
                })
                .collect();
            let mut runs: Vec<Box<dyn FnMut(usize)>> = prods
                .iter()
                .map(|p| {
                    let x = &x;
                    Box::new(move |r: usize| {
                        pool.install(|| {
                            for _ in 0..r {
                                black_box(layer(cell, batch, hidden, x, bi, bh, p));
                            }
                        })
                    }) as Box<dyn FnMut(usize)>
                })
                .collect();
            let mut refs: Vec<&mut dyn FnMut(usize)> = runs
                .iter_mut()
                .map(|f| &mut **f as &mut dyn FnMut(usize))
                .collect();
            let secs = race(Duration::from_secs(3), &mut refs);
            for (s, e) in secs.iter().zip(&errs) {
                cells.push(format!("{:>8.2} {e:>9.1e}", s * 1e3));
            }
            println!(
                "{cell:<6} {preset:<7} | {} | {} | {}",
                cells[0], cells[1], cells[2]
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let wanted =
        |label: &str| filters.is_empty() || filters.iter().any(|f| label.contains(f.as_str()));
    let pools: Vec<rayon::ThreadPool> = [1, 2]
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        })
        .collect();
    let mut peaks = std::collections::HashMap::new();
    if let Some(dir) = filters
        .iter()
        .find(|f| std::path::Path::new(f.as_str()).is_dir())
    {
        layers_on_files(dir);
        return;
    }
    for (name, flops, probe) in peak_probes() {
        let (p1, p2) = (&pools[0], &pools[1]);
        let mut one = |r: usize| p1.install(|| (0..r).for_each(|_| probe()));
        let mut two = |r: usize| {
            p2.install(|| {
                (0..r).for_each(|_| {
                    rayon::join(&probe, &probe);
                })
            })
        };
        let t = race(Duration::from_secs(2), &mut [&mut one, &mut two]);
        let (g1, g2) = (flops / t[0] / 1e9, 2.0 * flops / t[1] / 1e9);
        println!("peak {name:<15}: 1 thread {g1:7.1} G/s, 2 threads {g2:7.1} G/s");
        peaks.insert(name, [g1, g2]);
    }
    if filters.iter().any(|f| *f == "peak") {
        return;
    }
    if filters.iter().any(|f| *f == "layers") {
        for (t, pool) in pools.iter().enumerate().rev() {
            layers(pool, t + 1);
        }
        return;
    }
    let bf16_name = bf16_kernel_name();
    let bf16_peak = if bf16_name == "avx512bf16" {
        "bf16 vdpbf16ps"
    } else {
        "f32 FMA"
    };
    println!(
        "\n{:<32} {:>16} {:>3} | {:>14} | {:>14} | {:>14}",
        "shape",
        "m x k x n",
        "thr",
        "f32 GF/s %pk",
        format!("bf16 {bf16_name}"),
        format!("int8 {}", int8_kernel_name()),
    );
    for &(label, m, k, n) in SHAPES {
        if !wanted(label) {
            continue;
        }
        let a = random(m, k, 1);
        let w = random(n, k, 2);
        let (pf, pb, pi) = (
            PackedWeights::transposed(&w.view()),
            PackedBf16::transposed(&w.view()),
            PackedInt8::quantize_transposed(&w.view()),
        );
        let flops = 2.0 * (m * k * n) as f64;
        for (t, pool) in pools.iter().enumerate() {
            let mut c = [(); 3].map(|_| Array2::<f32>::zeros((m, n)));
            let [c0, c1, c2] = &mut c;
            let mut f32_run = |r: usize| {
                pool.install(|| {
                    (0..r).for_each(|_| matmul_packed(&mut c0.view_mut(), &a.view(), &pf, false))
                })
            };
            let mut bf16_run = |r: usize| {
                pool.install(|| {
                    (0..r).for_each(|_| matmul_bf16(&mut c1.view_mut(), &a.view(), &pb, false))
                })
            };
            let mut int8_run = |r: usize| {
                pool.install(|| {
                    (0..r).for_each(|_| matmul_int8(&mut c2.view_mut(), &a.view(), &pi, false))
                })
            };
            let secs = race(
                Duration::from_millis(1500),
                &mut [&mut f32_run, &mut bf16_run, &mut int8_run],
            );
            let cell = |s: f64, peak: &str| {
                let g = flops / s / 1e9;
                match peaks.get(peak) {
                    Some(p) => format!("{g:7.1} {:>4.0}%", 100.0 * g / p[t]),
                    None => format!("{g:7.1}     -"),
                }
            };
            println!(
                "{:<32} {:>16} {:>3} | {:>14} | {:>14} | {:>14}",
                label,
                format!("{m}x{k}x{n}"),
                t + 1,
                cell(secs[0], "f32 FMA"),
                cell(secs[1], bf16_peak),
                cell(secs[2], "int8 vpdpbusd"),
            );
        }
    }
}
