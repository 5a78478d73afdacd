//! Unit tests of the ops: exact values on small cases, error messages, and central-difference
//! checks of every backward.

use ndarray::{array, ArrayD, IxDyn};

use super::one_hot;
use crate::rng::Rng;
use crate::tensor::Tensor;

fn t(a: ArrayD<f32>) -> Tensor {
    Tensor::parameter(a)
}

/// Checks the gradients of `f` at random inputs of the given shapes against central
/// differences of `sum(f(inputs) * r)` for a fixed random `r` (step 1e-2, f32 forward).
fn check_grads(shapes: &[&[usize]], f: impl Fn(&[Tensor]) -> Tensor) {
    let mut rng = Rng::new(7);
    let arrays: Vec<ArrayD<f32>> = shapes
        .iter()
        .map(|s| ArrayD::from_shape_simple_fn(IxDyn(s), || rng.normal()))
        .collect();
    let params: Vec<Tensor> = arrays.iter().map(|a| t(a.clone())).collect();
    let out = f(&params);
    let r = ArrayD::from_shape_simple_fn(out.data().raw_dim(), || rng.normal());
    out.backward_with(r.clone()).unwrap();
    let eval = |arrs: &[ArrayD<f32>]| -> f64 {
        let ts: Vec<Tensor> = arrs.iter().map(|a| Tensor::new(a.clone())).collect();
        let o = f(&ts).to_array();
        o.iter()
            .zip(r.iter())
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    };
    let h = 1e-2f32;
    for (k, p) in params.iter().enumerate() {
        let analytic = p.grad().expect("a gradient reached every input");
        assert_eq!(analytic.shape(), arrays[k].shape());
        for (i, &an) in analytic.iter().enumerate() {
            let mut plus = arrays.clone();
            let mut minus = arrays.clone();
            plus[k].as_slice_mut().unwrap()[i] += h;
            minus[k].as_slice_mut().unwrap()[i] -= h;
            let num = ((eval(&plus) - eval(&minus)) / (2.0 * h as f64)) as f32;
            assert!(
                (num - an).abs() <= 5e-3 + 1e-2 * an.abs(),
                "input {k} element {i}: analytic {an}, numeric {num}"
            );
        }
    }
}

#[test]
fn broadcasting_values_and_grads() {
    let a = t(array![[1.0f32, 2., 3.], [4., 5., 6.]].into_dyn());
    let b = t(array![10.0f32, 20., 30.].into_dyn());
    let y = a.mul(&b).unwrap();
    assert_eq!(
        y.to_array(),
        array![[10.0f32, 40., 90.], [40., 100., 180.]].into_dyn()
    );
    y.sum().backward().unwrap();
    assert_eq!(b.grad().unwrap(), array![5.0f32, 7., 9.].into_dyn());
    assert_eq!(
        a.grad().unwrap(),
        array![[10.0f32, 20., 30.], [10., 20., 30.]].into_dyn()
    );

    // Both sides broadcast: (2, 1) op (1, 3) -> (2, 3); (4, 1, 3) op (2, 3) -> (4, 2, 3).
    for (sa, sb) in [
        (&[2usize, 1][..], &[1usize, 3][..]),
        (&[4, 1, 3], &[2, 3]),
        (&[3], &[]),
        (&[2, 3], &[2, 3]),
    ] {
        check_grads(&[sa, sb], |x| x[0].add(&x[1]).unwrap());
        check_grads(&[sa, sb], |x| x[0].sub(&x[1]).unwrap());
        check_grads(&[sa, sb], |x| x[0].mul(&x[1]).unwrap());
        check_grads(&[sa, sb], |x| {
            x[0].div(&x[1].mul(&x[1]).unwrap().add_scalar(1.0)).unwrap()
        });
    }
    check_grads(&[&[2, 3]], |x| x[0].mul_scalar(3.0).neg().add_scalar(2.0));
}

#[test]
fn broadcasting_errors_name_both_shapes() {
    let a = Tensor::zeros(&[2, 3]);
    let e = a.add(&Tensor::zeros(&[4])).unwrap_err().to_string();
    assert!(
        e.contains("(2, 3)")
            && e.contains("(4,)")
            && e.contains("tensor a (3)")
            && e.contains("tensor b (4)"),
        "{e}"
    );
}

#[test]
fn same_tensor_on_both_sides() {
    let x = t(array![3.0f32, -1.0].into_dyn());
    x.mul(&x).unwrap().sum().backward().unwrap();
    assert_eq!(x.grad().unwrap(), array![6.0f32, -2.0].into_dyn());
}

#[test]
fn matmul_values_grads_and_errors() {
    let a = Tensor::from_vec(&[2, 2], vec![1., 2., 3., 4.]).unwrap();
    let b = Tensor::from_vec(&[2, 1], vec![5., 6.]).unwrap();
    assert_eq!(
        a.matmul(&b).unwrap().to_array(),
        array![[17.0f32], [39.]].into_dyn()
    );
    check_grads(&[&[3, 4], &[4, 5]], |x| x[0].matmul(&x[1]).unwrap());
    check_grads(&[&[2, 3, 4], &[4, 2]], |x| x[0].matmul(&x[1]).unwrap());
    check_grads(&[&[4], &[4, 1]], |x| x[0].matmul(&x[1]).unwrap());
    let e = Tensor::zeros(&[3, 4])
        .matmul(&Tensor::zeros(&[5, 6]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)"),
        "{e}"
    );
    let e = Tensor::zeros(&[2, 3, 4])
        .matmul(&Tensor::zeros(&[5, 6]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("(6x4 and 5x6)"), "{e}");
}

#[test]
fn reductions() {
    let x = Tensor::from_vec(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
    assert_eq!(x.sum().item().unwrap(), 21.0);
    assert_eq!(x.mean().item().unwrap(), 3.5);
    assert_eq!(
        x.sum_dim(0, false).unwrap().to_array(),
        array![5.0f32, 7., 9.].into_dyn()
    );
    assert_eq!(
        x.mean_dim(-1, true).unwrap().to_array(),
        array![[2.0f32], [5.]].into_dyn()
    );
    for keep in [false, true] {
        check_grads(&[&[2, 3, 4]], |x| x[0].sum_dim(1, keep).unwrap());
        check_grads(&[&[2, 3, 4]], |x| x[0].mean_dim(-1, keep).unwrap());
    }
    check_grads(&[&[2, 3]], |x| x[0].mean());
    let e = x.sum_dim(2, false).unwrap_err().to_string();
    assert!(
        e.contains("expected to be in range of [-2, 1], but got 2"),
        "{e}"
    );
}

#[test]
fn reshape_infers_one_dimension() {
    let x = t(ArrayD::from_shape_fn(IxDyn(&[2, 3, 4]), |i| {
        (i[0] * 12 + i[1] * 4 + i[2]) as f32
    }));
    let y = x.reshape(&[-1, 4]).unwrap();
    assert_eq!(y.shape(), [6, 4]);
    assert_eq!(y.data()[[5, 3]], 23.0);
    assert_eq!(x.reshape(&[4, -1]).unwrap().shape(), [4, 6]);
    assert_eq!(x.unsqueeze(-1).unwrap().shape(), [2, 3, 4, 1]);
    let e = x.reshape(&[5, -1]).unwrap_err().to_string();
    assert!(
        e.contains("shape '[5, -1]' is invalid for input of size 24"),
        "{e}"
    );
    assert!(x.reshape(&[-1, -1]).is_err());
    assert!(x.reshape(&[2, 3, 5]).is_err());
    check_grads(&[&[2, 3, 4]], |x| {
        x[0].reshape(&[3, -1]).unwrap().mul_scalar(2.0)
    });
}

#[test]
fn transpose_select_narrow() {
    let x = Tensor::from_vec(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
    assert_eq!(
        x.transpose(0, -1).unwrap().to_array(),
        array![[1.0f32, 4.], [2., 5.], [3., 6.]].into_dyn()
    );
    assert_eq!(
        x.select(1, -1).unwrap().to_array(),
        array![3.0f32, 6.].into_dyn()
    );
    assert_eq!(
        x.select(0, 1).unwrap().to_array(),
        array![4.0f32, 5., 6.].into_dyn()
    );
    assert_eq!(
        x.narrow(1, 1, 2).unwrap().to_array(),
        array![[2.0f32, 3.], [5., 6.]].into_dyn()
    );
    let e = x.select(1, 3).unwrap_err().to_string();
    assert!(
        e.contains("index 3 is out of range for dimension 1 with size 3"),
        "{e}"
    );
    assert!(x.select(1, -4).is_err());
    assert!(x.narrow(1, 2, 2).is_err());
    // The last time step of (batch, seq, hidden) and its gradient.
    let out = t(ArrayD::from_shape_fn(IxDyn(&[2, 3, 2]), |i| i[1] as f32));
    let last = out.select(1, -1).unwrap();
    assert_eq!(last.to_array(), ArrayD::from_elem(IxDyn(&[2, 2]), 2.0f32));
    last.sum().backward().unwrap();
    let g = out.grad().unwrap();
    assert_eq!(g.sum(), 4.0);
    assert_eq!(g[[1, 2, 1]], 1.0);
    assert_eq!(g[[1, 1, 1]], 0.0);
    check_grads(&[&[2, 3, 4]], |x| x[0].transpose(0, 2).unwrap());
    check_grads(&[&[2, 3, 4]], |x| x[0].select(-2, 1).unwrap());
    check_grads(&[&[2, 3, 4]], |x| x[0].narrow(2, -3, 2).unwrap());
}

#[test]
fn cat_and_stack() {
    let a = t(array![[1.0f32, 2.]].into_dyn());
    let b = t(array![[3.0f32, 4.], [5., 6.]].into_dyn());
    let c = Tensor::cat(&[a.clone(), b.clone()], 0).unwrap();
    assert_eq!(
        c.to_array(),
        array![[1.0f32, 2.], [3., 4.], [5., 6.]].into_dyn()
    );
    c.mul(&Tensor::new(array![[1.0f32], [2.], [3.]].into_dyn()))
        .unwrap()
        .sum()
        .backward()
        .unwrap();
    assert_eq!(a.grad().unwrap(), array![[1.0f32, 1.]].into_dyn());
    assert_eq!(b.grad().unwrap(), array![[2.0f32, 2.], [3., 3.]].into_dyn());
    let e = Tensor::cat(&[a.clone(), Tensor::zeros(&[1, 3])], 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("(*, 2)") && e.contains("(1, 3)"), "{e}");
    assert!(Tensor::cat(&[], 0).is_err());

    let s = Tensor::stack(&[a.clone(), a.clone()], -1).unwrap();
    assert_eq!(s.shape(), [1, 2, 2]);
    assert_eq!(s.to_array(), array![[[1.0f32, 1.], [2., 2.]]].into_dyn());
    assert!(Tensor::stack(&[a.clone(), b.clone()], 0).is_err());
    check_grads(&[&[2, 3], &[2, 1], &[2, 2]], |x| {
        Tensor::cat(x, -1).unwrap()
    });
    check_grads(&[&[2, 3], &[2, 3]], |x| Tensor::stack(x, 1).unwrap());
    check_grads(&[&[2, 3], &[2, 3]], |x| Tensor::stack(x, 2).unwrap());
}

#[test]
fn activations() {
    check_grads(&[&[3, 4]], |x| x[0].tanh());
    check_grads(&[&[3, 4]], |x| x[0].sigmoid());
    check_grads(&[&[3, 4]], |x| x[0].relu());
    check_grads(&[&[3, 4]], |x| x[0].exp());
    check_grads(&[&[3, 4]], |x| {
        x[0].mul(&x[0]).unwrap().add_scalar(0.5).log()
    });
    let big = Tensor::new(array![-300.0f32, 0.0, 300.0].into_dyn());
    assert_eq!(
        big.sigmoid().to_array(),
        array![0.0f32, 0.5, 1.0].into_dyn()
    );
    assert_eq!(big.tanh().to_array(), array![-1.0f32, 0.0, 1.0].into_dyn());
    let x = t(array![-1.0f32, 0.0, 2.0].into_dyn());
    x.relu().sum().backward().unwrap();
    assert_eq!(x.grad().unwrap(), array![0.0f32, 0.0, 1.0].into_dyn());
}

#[test]
fn softmax_is_stable_and_differentiable() {
    let x = Tensor::new(array![[1000.0f32, 1000.0], [-1000.0, 0.0]].into_dyn());
    let p = x.softmax(1).unwrap().to_array();
    assert_eq!(p, array![[0.5f32, 0.5], [0.0, 1.0]].into_dyn());
    let lp = x.log_softmax(-1).unwrap().to_array();
    assert!(
        (lp[[0, 0]] + 2f32.ln()).abs() < 1e-6 && lp[[1, 0]] == -1000.0,
        "{lp}"
    );
    for dim in [0, 1, 2, -1] {
        check_grads(&[&[2, 3, 4]], |x| x[0].softmax(dim).unwrap());
        check_grads(&[&[2, 3, 4]], |x| x[0].log_softmax(dim).unwrap());
    }
    assert!(x.softmax(2).is_err());
}

#[test]
fn argmax_first_max_and_nan() {
    let x = Tensor::new(array![[1.0f32, 3.0, 3.0], [f32::NAN, 5.0, f32::NAN]].into_dyn());
    assert_eq!(x.argmax(1).unwrap(), array![1usize, 0].into_dyn());
    assert_eq!(x.argmax(0).unwrap(), array![1usize, 1, 1].into_dyn());
    assert!(Tensor::zeros(&[2, 0]).argmax(1).is_err());
}

#[test]
fn one_hot_and_from_vec() {
    let x = one_hot(&array![[0usize, 3], [1, 1]], 4).unwrap();
    assert_eq!(x.shape(), [2, 2, 4]);
    assert_eq!(x.data()[[0, 1, 3]], 1.0);
    assert_eq!(x.sum().item().unwrap(), 4.0);
    let e = one_hot(&vec![0usize, 4], 4).unwrap_err().to_string();
    assert!(
        e.contains("class index 4") && e.contains("num_classes = 4"),
        "{e}"
    );
    let e = Tensor::from_vec(&[2, 3], vec![0.0; 5])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("shape '[2, 3]' is invalid for input of size 5"),
        "{e}"
    );
}

#[test]
fn composite_log_softmax_of_affine() {
    // sum(log_softmax(x @ w + b) * r) in f32 against central differences.
    check_grads(&[&[5, 4], &[4, 3], &[3]], |p| {
        p[0].matmul(&p[1])
            .unwrap()
            .add(&p[2])
            .unwrap()
            .log_softmax(1)
            .unwrap()
    });
    check_grads(&[&[2, 5, 4], &[4, 3], &[1, 3]], |p| {
        let h = p[0].matmul(&p[1]).unwrap().tanh();
        h.mul(&p[2]).unwrap().sum_dim(-1, false).unwrap().sigmoid()
    });
}

#[test]
fn no_graph_without_grad() {
    let x = Tensor::new(array![1.0f32, 2.0].into_dyn());
    assert!(!x.tanh().add(&x).unwrap().requires_grad());
    let p = t(array![1.0f32, 2.0].into_dyn());
    assert!(!crate::no_grad(|| p.exp().sum()).requires_grad());
    assert!(p.exp().sum().requires_grad());
}
