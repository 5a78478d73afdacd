//! GEMM candidates on the shapes of the recurrent engine, in GFLOP/s (see BENCHMARKS.md,
//! "GEMM choice").
//!
//! `cargo bench -p rnn --bench gemm [-- FILTER...]`: the lines whose label contains one of the
//! filters (e.g. `step`, `large`, `lstm`); all of them without a filter. `peak` measures the
//! FMA peak, `xover` the threading crossover of `matmul_packed`.
//!
//! The machine may be shared, so the candidates of a line run interleaved: rounds in which
//! each gets one short batch (about a millisecond, at least one call), for a fixed time. Each
//! number is a candidate's best batch (the one least disturbed by other work); `--median` adds
//! the medians. A `*` marks a line whose CPUs were never both idle before it started.
//!
//! Columns, each for 1 and 2 threads (a rayon pool of that size):
//! * `packed`: [`rnn::linalg::matmul_packed`]. For the per-step products (`step`) `B` is packed
//!   once beforehand, as the engine does once per call for ~100 steps; for the one-off products
//!   the packing is timed too (`PackedWeights::new` then `matmul_packed`).
//! * `matmul`: [`rnn::linalg::matmul`], the crate's general entry point.
//! * `gemm`: the `gemm` crate 0.19 called directly (`Parallelism::None` / `Rayon(2)`).
//! * `mm`: `matrixmultiply` through `ndarray::linalg::general_mat_mul` (one thread: its
//!   `threading` feature is not enabled in this workspace).
//! * `pack us`: `PackedWeights::repack` of `B` into an existing buffer, in microseconds.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rnn::linalg::{matmul, matmul_packed, parallel_min_work, set_parallel_min_work, PackedWeights};

/// (name, batch, seq, input, hidden) of the workload presets.
const PRESETS: &[(&str, usize, usize, usize, usize)] = &[
    ("small", 32, 50, 64, 128),
    ("medium", 64, 100, 256, 512),
    ("large", 64, 100, 1024, 1024),
];
/// (name, gates) of the cells.
const CELLS: &[(&str, usize)] = &[("rnn", 1), ("lstm", 4), ("gru", 3)];

/// Runs the candidates interleaved for about `budget` (see the module docs); returns each one's
/// (best, median) seconds per call. A candidate `f(reps)` makes `reps` calls (inside its
/// thread pool, so that entering the pool is not timed per call).
fn race(budget: Duration, candidates: &mut [&mut dyn FnMut(usize)]) -> Vec<(f64, f64)> {
    let per_batch: Vec<usize> = candidates
        .iter_mut()
        .map(|f| {
            f(2); // warm caches and pools
            let t = Instant::now();
            f(1);
            ((1e-3 / t.elapsed().as_secs_f64().max(1e-8)) as usize).max(1)
        })
        .collect();
    let mut samples = vec![Vec::new(); candidates.len()];
    let start = Instant::now();
    while samples[0].len() < 5 || (start.elapsed() < budget && samples[0].len() < 3000) {
        for ((f, &reps), s) in candidates.iter_mut().zip(&per_batch).zip(&mut samples) {
            let t = Instant::now();
            f(reps);
            s.push(t.elapsed().as_secs_f64() / reps as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            (s[0], s[s.len() / 2])
        })
        .collect()
}

/// Waits (up to `max`) until the machine's CPUs are at least 90% idle over 200 ms; returns
/// false if they never were. Linux only; elsewhere returns true at once.
fn wait_quiet(max: Duration) -> bool {
    fn idle_total() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        Some((v.get(3)? + v.get(4)?, v.iter().sum()))
    }
    let start = Instant::now();
    loop {
        let Some((i0, t0)) = idle_total() else {
            return true;
        };
        std::thread::sleep(Duration::from_millis(200));
        let Some((i1, t1)) = idle_total() else {
            return true;
        };
        if (i1 - i0) as f64 >= 0.9 * (t1 - t0).max(1) as f64 {
            return true;
        }
        if start.elapsed() > max {
            return false;
        }
    }
}

fn random(m: usize, n: usize, seed: u64) -> Array2<f32> {
    let mut rng = rnn::Rng::new(seed);
    Array2::from_shape_fn((m, n), |_| rng.uniform(-1.0, 1.0))
}

/// `C = A B` through the `gemm` crate, with `threads` rayon threads (1: `Parallelism::None`).
fn gemm_crate(
    c: &mut ArrayViewMut2<'_, f32>,
    a: &ArrayView2<'_, f32>,
    b: &ArrayView2<'_, f32>,
    threads: usize,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let (cs, as_, bs) = (
        c.strides().to_vec(),
        a.strides().to_vec(),
        b.strides().to_vec(),
    );
    // SAFETY: pointers and strides of live views of the right shapes; `c` is exclusive.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            cs[1],
            cs[0],
            false,
            a.as_ptr(),
            as_[1],
            as_[0],
            b.as_ptr(),
            bs[1],
            bs[0],
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// One product of the engine: `C (m, n) = A (m, k) B (k, n)`.
struct Case {
    label: String,
    m: usize,
    k: usize,
    n: usize,
    /// `A` is a transposed view (the weight gradients read `dXW^T`).
    a_t: bool,
    /// `B` is a transposed view (`W^T` of a weight in PyTorch's (out, in) layout).
    b_t: bool,
    /// `B` is the same for every call (a per-step product): packed once, outside the timing.
    reused: bool,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for &(preset, batch, seq, input, hidden) in PRESETS {
        for &(cell, g) in CELLS {
            let gh = g * hidden;
            let r = batch * seq;
            let mut add = |what: &str, m, k, n, a_t, b_t, reused| {
                let label = format!("{preset:<6} {cell:<4} {what}");
                out.push(Case {
                    label,
                    m,
                    k,
                    n,
                    a_t,
                    b_t,
                    reused,
                })
            };
            add("step  H.W_hh^T", batch, hidden, gh, false, true, true);
            add("step dHW.W_hh ", batch, gh, hidden, false, false, true);
            add("X.W_ih^T      ", r, input, gh, false, true, false);
            add("dXW^T.X       ", gh, r, input, true, false, false);
            add("dHW^T.H       ", gh, r, hidden, true, false, false);
            add("dXW.W_ih      ", r, gh, input, false, false, false);
        }
    }
    out
}

/// Iterations of [`fma_chains`] per call: 3.84 MFLOP, about 40 us.
const PEAK_ITERS: usize = 20_000;

/// The FMA peak probe: 12 independent chains of 8-wide f32 FMAs, `iters` times (12 * 16 flops
/// per iteration); enough chains to fill both FMA pipes whatever their latency.
#[cfg(target_arch = "x86_64")]
fn fma_chains(iters: usize) -> f32 {
    #[target_feature(enable = "avx2,fma")]
    fn chains(iters: usize) -> f32 {
        use std::arch::x86_64::*;
        let mut acc = [_mm256_set1_ps(0.0); 12];
        let (x, y) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, x, y);
            }
        }
        let mut sum = _mm256_set1_ps(0.0);
        for a in acc {
            sum = _mm256_add_ps(sum, a);
        }
        let mut out = [0.0f32; 8];
        // SAFETY: `out` holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
        out.iter().sum()
    }
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        return 0.0;
    }
    // SAFETY: AVX2 and FMA were detected above.
    unsafe { chains(black_box(iters)) }
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_chains(_iters: usize) -> f32 {
    0.0
}

/// Busy work on the calling thread for about `us` microseconds: the gate math between two
/// per-step products, during which rayon's idle workers may fall asleep.
fn gate_math(us: f64) {
    let t = Instant::now();
    let mut x = 0.5f32;
    while t.elapsed().as_secs_f64() * 1e6 < us {
        for _ in 0..100 {
            x = black_box((x * 0.9).tanh() + 0.1);
        }
    }
}

/// The threading crossover of `matmul_packed` (`xover`): one thread against the product split
/// in two, back to back and with 50 us of other work on the calling thread before each product
/// (as the engine's gate math between steps).
fn crossover(pool2: &rayon::ThreadPool) {
    let default = parallel_min_work();
    println!(
        "{:>16} {:>10} {:>9} {:>9} {:>8} | {:>12} {:>12} {:>8}",
        "m x k x n", "MACs", "1T us", "2T us", "speedup", "1T+gap us", "2T+gap us", "speedup"
    );
    let shapes = [
        (64, 64),
        (128, 128),
        (128, 256),
        (128, 384),
        (128, 512),
        (256, 512),
        (512, 512),
        (512, 1024),
    ];
    for m in [8, 32, 64] {
        for (k, n) in shapes {
            let a = random(m, k, 1);
            let w = random(n, k, 2);
            let packed = PackedWeights::new(&w.t());
            let quiet = wait_quiet(Duration::from_secs(10));
            let variant = |min_work: usize, gap: f64| {
                let (a, packed) = (&a, &packed);
                let mut c = Array2::<f32>::zeros((m, n));
                move |reps: usize| {
                    set_parallel_min_work(min_work);
                    pool2.install(|| {
                        for _ in 0..reps {
                            if gap > 0.0 {
                                gate_math(gap);
                            }
                            matmul_packed(&mut c.view_mut(), &a.view(), packed, false)
                        }
                    });
                }
            };
            let (mut v1, mut v2) = (variant(usize::MAX, 0.0), variant(0, 0.0));
            let (mut v3, mut v4) = (variant(usize::MAX, 50.0), variant(0, 50.0));
            let t = race(
                Duration::from_millis(800),
                &mut [&mut v1, &mut v2, &mut v3, &mut v4],
            );
            let us: Vec<f64> = t
                .iter()
                .enumerate()
                .map(|(i, t)| t.0 * 1e6 - if i >= 2 { 50.0 } else { 0.0 })
                .collect();
            println!(
                "{:>16} {:>10} {:>9.1} {:>9.1} {:>8.2} | {:>12.1} {:>12.1} {:>8.2}{}",
                format!("{m}x{k}x{n}"),
                m * k * n,
                us[0],
                us[1],
                us[0] / us[1],
                us[2],
                us[3],
                us[2] / us[3],
                if quiet { "" } else { " *" }
            );
        }
    }
    set_parallel_min_work(default);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let median = args.iter().any(|a| a == "--median");
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
    let peak_flops = (PEAK_ITERS * 12 * 16) as f64;
    let (pool1, pool2) = (&pools[0], &pools[1]);
    let mut peak1 = |r: usize| {
        pool1.install(|| {
            (0..r).for_each(|_| {
                black_box(fma_chains(PEAK_ITERS));
            })
        })
    };
    let mut peak2 = |r: usize| {
        pool2.install(|| {
            (0..r).for_each(|_| {
                black_box(rayon::join(
                    || fma_chains(PEAK_ITERS),
                    || fma_chains(PEAK_ITERS),
                ));
            })
        })
    };
    if wanted("peak") {
        wait_quiet(Duration::from_secs(20));
        let t = race(Duration::from_secs(2), &mut [&mut peak1, &mut peak2]);
        println!(
            "peak FMA (12 chains of 8-wide f32): 1 thread {:.1} GFLOP/s, 2 threads {:.1} GFLOP/s",
            peak_flops / t[0].0 / 1e9,
            2.0 * peak_flops / t[1].0 / 1e9
        );
    }
    if filters.iter().any(|f| *f == "xover") {
        crossover(&pools[1]);
        return;
    }
    println!(
        "{:<28} {:>16} {:>13} {:>13} {:>13} {:>7} {:>9} {:>13}",
        "shape",
        "m x k x n",
        "packed 1T/2T",
        "matmul 1T/2T",
        "gemm 1T/2T",
        "mm 1T",
        "pack us",
        "peak 1T/2T"
    );
    for case in cases() {
        if !wanted(&case.label) {
            continue;
        }
        let Case {
            m,
            k,
            n,
            a_t,
            b_t,
            reused,
            ..
        } = case;
        let quiet = wait_quiet(Duration::from_secs(20));
        let flops = 2.0 * (m * n * k) as f64;
        // About 40 batches of each candidate at 40 GFLOP/s, within 1 to 12 seconds per line.
        let budget = Duration::from_secs_f64((flops / 40e9 * 7.0 * 40.0).clamp(1.0, 12.0));
        let a_store = if a_t {
            random(k, m, 1)
        } else {
            random(m, k, 1)
        };
        let a = if a_t { a_store.t() } else { a_store.view() };
        let b_store = if b_t {
            random(n, k, 2)
        } else {
            random(k, n, 2)
        };
        let b = if b_t { b_store.t() } else { b_store.view() };
        let packed = PackedWeights::new(&b);
        let c0 = Array2::<f32>::zeros((m, n));
        let (p1, p2) = (&pools[0], &pools[1]);
        let (mut c1, mut c2, mut c3, mut c4, mut c5, mut c6, mut c7) = (
            c0.clone(),
            c0.clone(),
            c0.clone(),
            c0.clone(),
            c0.clone(),
            c0.clone(),
            c0.clone(),
        );
        let packed_on = |pool: &rayon::ThreadPool, c: &mut Array2<f32>, reps: usize| {
            pool.install(|| {
                for _ in 0..reps {
                    if reused {
                        matmul_packed(&mut c.view_mut(), &a, &packed, false);
                    } else {
                        let p = PackedWeights::new(&b);
                        matmul_packed(&mut c.view_mut(), &a, &p, false);
                    }
                }
            })
        };
        let on = |pool: &rayon::ThreadPool, reps: usize, f: &mut (dyn FnMut() + Send)| {
            pool.install(|| (0..reps).for_each(|_| f()))
        };
        let times = race(
            budget,
            &mut [
                &mut |r| packed_on(p1, &mut c1, r),
                &mut |r| packed_on(p2, &mut c2, r),
                &mut |r| on(p1, r, &mut || matmul(&mut c3.view_mut(), &a, &b, false)),
                &mut |r| on(p2, r, &mut || matmul(&mut c4.view_mut(), &a, &b, false)),
                &mut |r| on(p1, r, &mut || gemm_crate(&mut c5.view_mut(), &a, &b, 1)),
                &mut |r| on(p2, r, &mut || gemm_crate(&mut c6.view_mut(), &a, &b, 2)),
                &mut |r| {
                    on(p1, r, &mut || {
                        ndarray::linalg::general_mat_mul(1.0, &a, &b, 0.0, &mut c7)
                    })
                },
                &mut peak1,
                &mut peak2,
            ],
        );
        let peak = (
            peak_flops / times[7].0 / 1e9,
            2.0 * peak_flops / times[8].0 / 1e9,
        );
        let mut repacked = PackedWeights::new(&b);
        let pack = race(
            Duration::from_millis(200),
            &mut [&mut |r| (0..r).for_each(|_| repacked.repack(&b))],
        );
        let gf = |t: f64| format!("{:.0}", flops / t / 1e9);
        let best: Vec<String> = times.iter().map(|t| gf(t.0)).collect();
        println!(
            "{:<28} {:>16} {:>6}/{:<6} {:>6}/{:<6} {:>6}/{:<6} {:>7} {:>9.1} {:>6.0}/{:<6.0}{}",
            case.label,
            format!("{m}x{k}x{n}"),
            best[0],
            best[1],
            best[2],
            best[3],
            best[4],
            best[5],
            best[6],
            pack[0].0 * 1e6,
            peak.0,
            peak.1,
            if quiet { "" } else { " *" }
        );
        if median {
            let med: Vec<String> = times[..7].iter().map(|t| gf(t.1)).collect();
            println!(
                "{:<28} {:>16} {:>6}/{:<6} {:>6}/{:<6} {:>6}/{:<6} {:>7}",
                "  (median)", "", med[0], med[1], med[2], med[3], med[4], med[5], med[6]
            );
        }
        // The candidates agree (a wrong kernel would not be a fast one).
        for c in [&c2, &c3, &c4, &c5, &c6, &c7] {
            let diff = (&c1 - c).iter().fold(0.0f32, |m, d| m.max(d.abs()));
            assert!(
                diff <= 1e-3 * (k as f32).sqrt(),
                "{}: candidates differ by {diff}",
                case.label
            );
        }
    }
}
