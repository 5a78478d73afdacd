//! Readable arrays, laid out as PyTorch prints tensors: nested brackets, one row per line,
//! a blank line between blocks, columns aligned.

use ndarray::{ArrayViewD, Axis};

/// `a` as nested brackets with `precision` decimals (none when every value is an integer),
/// every line after the first indented by `indent` spaces.
///
/// ```text
/// [[[ 0.1234, -0.5678],
///   [ 0.0010,  0.2000]],
///
///  [[...]]]
/// ```
pub fn array(a: ArrayViewD<'_, f32>, precision: usize, indent: usize) -> String {
    let integral = a.iter().all(|v| v.fract() == 0.0 && v.abs() < 1e9);
    let cell = |v: f32| {
        if integral {
            format!("{v:.0}")
        } else {
            format!("{v:.precision$}")
        }
    };
    let width = a.iter().map(|&v| cell(v).len()).max().unwrap_or(0);
    let mut out = String::new();
    write_block(&a, 0, &|v| format!("{:>width$}", cell(v)), &mut out);
    out.replace('\n', &format!("\n{}", " ".repeat(indent)))
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_block(
    a: &ArrayViewD<'_, f32>,
    depth: usize,
    cell: &dyn Fn(f32) -> String,
    out: &mut String,
) {
    match a.ndim() {
        0 => out.push_str(&cell(a.iter().next().copied().unwrap_or(0.0))),
        1 => {
            let items: Vec<String> = a.iter().map(|&v| cell(v)).collect();
            out.push('[');
            out.push_str(&items.join(", "));
            out.push(']');
        }
        n => {
            out.push('[');
            let len = a.len_of(Axis(0));
            for i in 0..len {
                if i > 0 {
                    out.push(',');
                    out.push_str(&"\n".repeat(n - 1));
                    out.push_str(&" ".repeat(depth + 1));
                }
                write_block(&a.index_axis(Axis(0), i), depth + 1, cell, out);
            }
            out.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array3};

    #[test]
    fn nested_and_aligned_like_pytorch() {
        let a = array![[0.5f32, -1.25], [10.0, 0.0]].into_dyn();
        assert_eq!(array(a.view(), 2, 0), "[[ 0.50, -1.25],\n [10.00,  0.00]]");
        let b = Array3::from_shape_fn((2, 2, 2), |(i, j, k)| (i * 4 + j * 2 + k) as f32).into_dyn();
        assert_eq!(
            array(b.view(), 4, 2),
            "[[[0, 1],\n    [2, 3]],\n\n   [[4, 5],\n    [6, 7]]]"
        );
        assert_eq!(array(array![3.0f32].into_dyn().view(), 4, 0), "[3]");
    }
}
