//! `Tensor`: an f32 n-dimensional array that records the operations made on it, and reverse-mode
//! differentiation through them (`loss.backward()`), as in PyTorch.
//!
//! Operations are coarse: a whole recurrent layer pass is one node of the graph, with a
//! hand-written backward through time. The graph is built on the fly and freed when its tensors
//! are dropped; nothing is recorded inside [`no_grad`] or when no input requires a gradient.
//!
//! ```
//! use rnn::Tensor;
//! use ndarray::array;
//! let w = Tensor::parameter(array![1.0f32, 2.0, 3.0].into_dyn());
//! let x = Tensor::new(array![4.0f32, 5.0, 6.0].into_dyn());
//! let loss = w.mul(&x).unwrap().sum();
//! loss.backward().unwrap();
//! assert_eq!(w.grad().unwrap(), array![4.0f32, 5.0, 6.0].into_dyn());
//! ```

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ndarray::{ArrayD, IxDyn};

use crate::error::{Error, Result};

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` without recording operations, like `with torch.no_grad():`.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

/// Whether operations are being recorded on this thread (false inside [`no_grad`]).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// The backward of one recorded operation.
///
/// `grads[k]` is the gradient of the loss with respect to output `k` (`None` if no gradient
/// reached it); the result has one entry per input, `None` for inputs that need none.
pub trait Backward: Send + Sync {
    /// The operation's name, for error messages and `Debug`.
    fn name(&self) -> &'static str;
    /// Gradients with respect to the inputs, given the gradients with respect to the outputs.
    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>>;
}

/// One node of the graph: an operation, its inputs and the gradients reaching its outputs.
struct OpNode {
    op: Box<dyn Backward>,
    inputs: Vec<Tensor>,
    output_grads: Mutex<Vec<Option<ArrayD<f32>>>>,
}

/// A new tensor's [`Tensor::id`].
fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

struct Inner {
    data: RwLock<ArrayD<f32>>,
    /// How many times the values were handed out for writing ([`Tensor::data_mut`]): what a
    /// copy derived from them (a layer's packed weights) checks before it is used again.
    version: AtomicU64,
    /// A number no other tensor of this process has: see [`Tensor::id`].
    id: u64,
    grad: RwLock<Option<ArrayD<f32>>>,
    /// Whether a gradient flows here; a leaf's can be changed ([`Tensor::requires_grad_`]).
    requires_grad: AtomicBool,
    /// The operation that produced this tensor and which of its outputs it is.
    creator: Option<(Arc<OpNode>, usize)>,
}

/// An f32 array with an optional gradient, shared by reference (cloning is cheap).
#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = self.data();
        write!(f, "Tensor{}", crate::error::Shape::of(data.shape()))?;
        if let Some((node, _)) = &self.0.creator {
            write!(f, " grad_fn={}", node.op.name())?;
        } else if self.requires_grad() {
            write!(f, " requires_grad")?;
        }
        write!(f, " {data}")
    }
}

impl From<ArrayD<f32>> for Tensor {
    fn from(a: ArrayD<f32>) -> Self {
        Tensor::new(a)
    }
}

fn add_into(slot: &mut Option<ArrayD<f32>>, g: ArrayD<f32>) {
    match slot {
        Some(acc) => *acc += &g,
        None => *slot = Some(g),
    }
}

impl Tensor {
    /// A constant: no gradient is computed for it.
    pub fn new(data: impl Into<ArrayD<f32>>) -> Self {
        Tensor(Arc::new(Inner {
            data: RwLock::new(data.into()),
            version: AtomicU64::new(0),
            id: next_id(),
            grad: RwLock::new(None),
            requires_grad: AtomicBool::new(false),
            creator: None,
        }))
    }

    /// A leaf that requires a gradient (a parameter): `backward` accumulates into [`Tensor::grad`].
    pub fn parameter(data: impl Into<ArrayD<f32>>) -> Self {
        Tensor(Arc::new(Inner {
            data: RwLock::new(data.into()),
            version: AtomicU64::new(0),
            id: next_id(),
            grad: RwLock::new(None),
            requires_grad: AtomicBool::new(true),
            creator: None,
        }))
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor::new(ArrayD::zeros(IxDyn(shape)))
    }

    /// A scalar (0-dimensional) tensor.
    pub fn scalar(value: f32) -> Self {
        Tensor::new(ndarray::arr0(value).into_dyn())
    }

    /// Records the result of an operation. Returns one tensor per output; they carry a graph
    /// node only if recording is on and some input requires a gradient.
    pub fn from_op(
        outputs: Vec<ArrayD<f32>>,
        inputs: Vec<Tensor>,
        op: impl Backward + 'static,
    ) -> Vec<Tensor> {
        if !is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
            return outputs.into_iter().map(Tensor::new).collect();
        }
        let node = Arc::new(OpNode {
            op: Box::new(op),
            inputs,
            output_grads: Mutex::new(vec![None; outputs.len()]),
        });
        outputs
            .into_iter()
            .enumerate()
            .map(|(k, data)| {
                Tensor(Arc::new(Inner {
                    data: RwLock::new(data),
                    version: AtomicU64::new(0),
                    id: next_id(),
                    grad: RwLock::new(None),
                    requires_grad: AtomicBool::new(true),
                    creator: Some((node.clone(), k)),
                }))
            })
            .collect()
    }

    /// Like [`Tensor::from_op`] for a single output.
    pub fn from_unary_op(
        output: ArrayD<f32>,
        inputs: Vec<Tensor>,
        op: impl Backward + 'static,
    ) -> Tensor {
        Tensor::from_op(vec![output], inputs, op)
            .pop()
            .expect("one output")
    }

    /// Whether a gradient flows to this tensor (a parameter, or computed from one).
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.load(Ordering::Relaxed)
    }

    /// `tensor.requires_grad_(flag)`: makes a leaf a parameter (or a constant again), in place
    /// for every handle of it, and returns it. Operations recorded before the change are not
    /// affected. As in PyTorch, only a leaf's flag can change: "you can only change
    /// requires_grad flags of leaf variables."
    ///
    /// ```
    /// use rnn::Tensor;
    /// let x = Tensor::from_vec(&[2], vec![1.0, 2.0]).unwrap();
    /// let w = x.requires_grad_(true).unwrap();
    /// assert!(x.requires_grad() && w.same(&x));
    /// let y = (&x * &x).sum();
    /// y.backward().unwrap();
    /// assert_eq!(x.grad().unwrap(), ndarray::array![2.0f32, 4.0].into_dyn());
    /// assert!(y.requires_grad_(false).is_err());
    /// ```
    pub fn requires_grad_(&self, requires_grad: bool) -> Result<Tensor> {
        if !self.is_leaf() {
            return Err(Error::Invalid(
                "you can only change requires_grad flags of leaf variables (this tensor is the \
                 result of an operation; use .detach() first)"
                    .into(),
            ));
        }
        self.0.requires_grad.store(requires_grad, Ordering::Relaxed);
        Ok(self.clone())
    }

    /// Whether this tensor is a leaf (not produced by a recorded operation).
    pub fn is_leaf(&self) -> bool {
        self.0.creator.is_none()
    }

    /// The values, read-locked.
    pub fn data(&self) -> RwLockReadGuard<'_, ArrayD<f32>> {
        self.0.data.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The values, write-locked: for optimizers and loading weights (no graph is recorded).
    /// A layer that keeps something made from its parameters (its packed weights, see
    /// [`crate::Recurrent`]) makes it again after any such write.
    pub fn data_mut(&self) -> RwLockWriteGuard<'_, ArrayD<f32>> {
        let guard = self.0.data.write().unwrap_or_else(|e| e.into_inner());
        // Under the write lock: whoever reads the values after this write sees the new version.
        self.0.version.fetch_add(1, Ordering::Relaxed);
        guard
    }

    /// The values' version: it changes whenever they are handed out for writing. Read it
    /// while holding [`Tensor::data`]'s guard, so that it cannot change meanwhile.
    pub(crate) fn version(&self) -> u64 {
        self.0.version.load(Ordering::Relaxed)
    }

    /// Which tensor this is: the same for every clone of it (they share their values), and
    /// never reused by another tensor, even after this one is dropped.
    pub(crate) fn id(&self) -> u64 {
        self.0.id
    }

    /// A copy of the values.
    pub fn to_array(&self) -> ArrayD<f32> {
        self.data().clone()
    }

    /// The shape, as PyTorch's `tensor.shape`.
    pub fn shape(&self) -> Vec<usize> {
        self.data().shape().to_vec()
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.data().ndim()
    }

    /// The value of a tensor with one element, as `tensor.item()`.
    pub fn item(&self) -> Result<f32> {
        let d = self.data();
        if d.len() != 1 {
            return Err(Error::shape_hint(
                "item()",
                "a tensor with one element",
                d.shape(),
                "only one-element tensors can be converted to a number",
            ));
        }
        Ok(*d.iter().next().expect("one element"))
    }

    /// A new leaf with the same values that is cut from the graph, as `tensor.detach()`.
    pub fn detach(&self) -> Tensor {
        Tensor::new(self.to_array())
    }

    /// The accumulated gradient (`tensor.grad`), if any.
    pub fn grad(&self) -> Option<ArrayD<f32>> {
        self.0
            .grad
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Clears the gradient (`tensor.grad = None`).
    pub fn zero_grad(&self) {
        *self.0.grad.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Replaces the gradient (for gradient clipping and optimizer tests).
    pub fn set_grad(&self, grad: Option<ArrayD<f32>>) {
        *self.0.grad.write().unwrap_or_else(|e| e.into_inner()) = grad;
    }

    /// Whether two handles refer to the same tensor.
    pub fn same(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// `loss.backward()`: differentiates a one-element tensor; every parameter it depends on
    /// accumulates its gradient.
    pub fn backward(&self) -> Result<()> {
        let shape = self.shape();
        if shape.iter().product::<usize>() != 1 {
            return Err(Error::shape_hint(
                "backward()",
                "a tensor with one element",
                &shape,
                "grad can be implicitly created only for scalar outputs; use backward_with",
            ));
        }
        self.backward_with(ArrayD::ones(IxDyn(&shape)))
    }

    /// `tensor.backward(gradient)`: differentiates `sum(self * gradient)`.
    pub fn backward_with(&self, gradient: ArrayD<f32>) -> Result<()> {
        let shape = self.shape();
        if gradient.shape() != shape.as_slice() {
            return Err(Error::shape(
                "backward gradient",
                Shape::of(&shape).to_string(),
                gradient.shape(),
            ));
        }
        if !self.requires_grad() {
            return Err(Error::Invalid(
                "element 0 of tensors does not require grad and does not have a grad_fn".into(),
            ));
        }
        self.accumulate(gradient);
        // Topological order of the op nodes reachable from self (inputs before users).
        let mut order: Vec<Arc<OpNode>> = Vec::new();
        let mut seen: HashSet<*const OpNode> = HashSet::new();
        if let Some((root, _)) = &self.0.creator {
            // Iterative post-order DFS.
            let mut stack: Vec<(Arc<OpNode>, usize)> = vec![(root.clone(), 0)];
            seen.insert(Arc::as_ptr(root));
            while let Some((node, next)) = stack.pop() {
                if next < node.inputs.len() {
                    stack.push((node.clone(), next + 1));
                    if let Some((child, _)) = &node.inputs[next].0.creator {
                        if seen.insert(Arc::as_ptr(child)) {
                            stack.push((child.clone(), 0));
                        }
                    }
                } else {
                    order.push(node);
                }
            }
        }
        for node in order.iter().rev() {
            let grads =
                std::mem::take(&mut *node.output_grads.lock().unwrap_or_else(|e| e.into_inner()));
            let n_out = grads.len();
            if grads.iter().all(|g| g.is_none()) {
                *node.output_grads.lock().unwrap_or_else(|e| e.into_inner()) = vec![None; n_out];
                continue;
            }
            let input_grads = node.op.backward(&grads, &node.inputs);
            *node.output_grads.lock().unwrap_or_else(|e| e.into_inner()) = vec![None; n_out];
            for (input, g) in node.inputs.iter().zip(input_grads) {
                if let Some(g) = g {
                    if input.requires_grad() {
                        input.accumulate(g);
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds `g` to this tensor's gradient: a leaf's `.grad`, or its creator's output slot.
    fn accumulate(&self, g: ArrayD<f32>) {
        match &self.0.creator {
            Some((node, k)) => {
                let mut grads = node.output_grads.lock().unwrap_or_else(|e| e.into_inner());
                add_into(&mut grads[*k], g);
            }
            None => {
                let mut grad = self.0.grad.write().unwrap_or_else(|e| e.into_inner());
                add_into(&mut grad, g);
            }
        }
    }
}

use crate::error::Shape;

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    struct Square;
    impl Backward for Square {
        fn name(&self) -> &'static str {
            "Square"
        }
        fn backward(
            &self,
            grads: &[Option<ArrayD<f32>>],
            inputs: &[Tensor],
        ) -> Vec<Option<ArrayD<f32>>> {
            let x = inputs[0].data();
            vec![grads[0].as_ref().map(|g| g * &*x * 2.0)]
        }
    }

    fn square(x: &Tensor) -> Tensor {
        let y = x.data().mapv(|v| v * v);
        Tensor::from_unary_op(y, vec![x.clone()], Square)
    }

    #[test]
    fn diamond_graph_accumulates_once_per_path() {
        // y = x^2 used twice: d/dx (x^2 + x^2)^2 ... via backward_with on a vector.
        let x = Tensor::parameter(array![1.0f32, -2.0].into_dyn());
        let y = square(&x);
        let z = square(&y); // x^4
        z.backward_with(array![1.0f32, 1.0].into_dyn()).unwrap();
        assert_eq!(x.grad().unwrap(), array![4.0f32, -32.0].into_dyn());
        // Gradients accumulate until zeroed.
        let z = square(&square(&x));
        z.backward_with(array![1.0f32, 1.0].into_dyn()).unwrap();
        assert_eq!(x.grad().unwrap(), array![8.0f32, -64.0].into_dyn());
        x.zero_grad();
        assert!(x.grad().is_none());
    }

    #[test]
    fn no_grad_records_nothing() {
        let x = Tensor::parameter(array![1.0f32].into_dyn());
        let y = no_grad(|| square(&x));
        assert!(!y.requires_grad());
        assert!(is_grad_enabled());
        assert!(y.backward().is_err());
    }

    #[test]
    fn backward_needs_a_scalar() {
        let x = Tensor::parameter(array![1.0f32, 2.0].into_dyn());
        let err = square(&x).backward().unwrap_err().to_string();
        assert!(err.contains("(2,)"), "{err}");
    }
}
