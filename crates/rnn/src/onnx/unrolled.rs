//! nn.RNN as `torch.onnx.export(dynamo=True)` writes it: no `RNN` node, but the recurrence
//! unrolled over the example's time steps. Per layer and direction:
//!
//! ```text
//! P     = X @ W_ih^T + b_ih                   (L, N, H)    MatMul, Add     (reverse: Slice step -1)
//! p_t   = Squeeze(Slice(P, t, t+1))           (N, H)
//! h_t   = act(h_{t-1} @ W_hh^T + b_hh + p_t)  (1, N, H)    MatMul, Add, Add, Tanh/Relu
//! Y     = Concat(h_0, ..., h_{L-1})           (L, N, H)    (reverse: h_{L-1}, ..., h_0)
//! X'    = Concat(Y_forward, Y_reverse, axis 2)             the next layer's input
//! h_n   = Concat(Unsqueeze(Squeeze(h_{L-1})), ...)         one row per layer and direction
//! ```
//!
//! With zero initial states the exporter folds the first step's `h_{-1} @ W_hh^T + b_hh` into a
//! constant: it must be `b_hh` on every row (zeros without bias). Each of these operators is
//! interpreted over abstract values as the glue is ([`import`](mod@super::import)); the chains of
//! steps found become layers like those of `RNN` nodes.

use super::import::{Init, Interp, Layer, Val};
use super::proto::NodeProto;
use super::tensor::{node_label, Const, Data};
use super::OnnxError;
use crate::config::{CellKind, Nonlinearity};

/// Where a projection's sequence comes from.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum LinSrc {
    /// A graph input, batch first or not.
    Input(String, bool),
    /// The output of the unrolled layer made of these chains (forward, then reverse).
    Chains(Vec<usize>),
}

/// `X @ W^T (+ b)` over a whole sequence, possibly reversed in time.
#[derive(Clone, Debug)]
pub(super) struct Lin {
    src: LinSrc,
    /// `W^T` as stored: (input features, hidden).
    w: Const,
    b: Option<Const>,
    flipped: bool,
}

/// One direction of one layer: its steps so far.
#[derive(Clone, Debug)]
pub(super) struct Chain {
    lin: usize,
    /// `W_hh^T` (hidden, hidden) and `b_hh`, once a step has shown them.
    w_hh: Option<(Const, Option<Const>)>,
    /// The folded first step's constant, checked against `b_hh` at the end.
    folded: Option<Const>,
    init: Init,
    act: Option<Nonlinearity>,
    steps: usize,
}

/// Where a hidden-state product reads `h` from.
#[derive(Clone, Debug)]
pub(super) enum HFrom {
    Init(Init),
    Step(usize, usize),
}

fn same(a: &Const, b: &Const) -> bool {
    a.dims == b.dims && a.data == b.data
}

impl Interp<'_> {
    /// Interprets `node` if it belongs to an unrolled RNN; `None` when it does not.
    pub(super) fn unrolled(
        &mut self,
        node: &NodeProto,
        op: &str,
    ) -> Option<Result<Val, OnnxError>> {
        let vals: Vec<Option<Val>> = (0..node.input.len())
            .map(|i| self.get(node, i).ok().flatten().cloned())
            .collect();
        let involved = vals.iter().flatten().any(|v| {
            matches!(
                v,
                Val::Lin(_)
                    | Val::LinStep(..)
                    | Val::HLin(..)
                    | Val::Pre(..)
                    | Val::Hid(..)
                    | Val::Steps(_)
                    | Val::UnSeq(_)
            )
        });
        if !involved && op != "MatMul" {
            return None;
        }
        Some(self.unrolled_op(node, op, &vals))
    }

    fn unrolled_op(
        &mut self,
        node: &NodeProto,
        op: &str,
        vals: &[Option<Val>],
    ) -> Result<Val, OnnxError> {
        let fail = |m: &str| Err(OnnxError(format!("{}: {m}", node_label(node))));
        let a = vals.first().cloned().flatten();
        let b = vals.get(1).cloned().flatten();
        match op {
            "MatMul" => {
                let Some(Val::Const(w)) = b else {
                    return fail("is not a product with a constant weight");
                };
                if w.dims.len() != 2 || w.floats().is_none() {
                    return fail("multiplies by a weight that is not a 2-D float matrix");
                }
                let src = match a {
                    Some(Val::Input {
                        name,
                        axes,
                        rows: None,
                    }) if axes.len() == 3 => {
                        use super::import::Axis::In;
                        match (axes[0], axes[1], axes[2]) {
                            (In(0), In(1), In(2)) => LinSrc::Input(name, false),
                            (In(1), In(0), In(2)) => LinSrc::Input(name, true),
                            _ => return fail("reads the graph input with its axes mixed"),
                        }
                    }
                    Some(Val::Input { rows: Some(_), .. }) => {
                        let Some(Val::Input {
                            name,
                            rows: Some(r),
                            ..
                        }) = a
                        else {
                            unreachable!()
                        };
                        return Ok(Val::HLin(
                            HFrom::Init(Init::Rows {
                                input: name,
                                rows: r,
                            }),
                            w,
                            None,
                        ));
                    }
                    Some(Val::Hid(c, t)) => return Ok(Val::HLin(HFrom::Step(c, t), w, None)),
                    Some(Val::Steps(c)) => LinSrc::Chains(vec![c]),
                    Some(Val::UnSeq(cs)) => LinSrc::Chains(cs),
                    _ => return fail("is not an unrolled RNN's product"),
                };
                self.lins.push(Lin {
                    src,
                    w,
                    b: None,
                    flipped: false,
                });
                Ok(Val::Lin(self.lins.len() - 1))
            }
            "Add" => {
                let (x, y) = match (a, b) {
                    (Some(x), Some(y)) => (x, y),
                    _ => return fail("has a missing input"),
                };
                let ordered = match (&x, &y) {
                    (Val::Const(_), _) | (Val::LinStep(..), Val::HLin(..)) => (y, x),
                    _ => (x, y),
                };
                match ordered {
                    (Val::Lin(id), Val::Const(bias))
                        if self.lins[id].b.is_none() && bias.dims.len() == 1 =>
                    {
                        let mut l = self.lins[id].clone();
                        l.b = Some(bias);
                        self.lins.push(l);
                        Ok(Val::Lin(self.lins.len() - 1))
                    }
                    (Val::HLin(from, w, None), Val::Const(bias)) if bias.dims.len() == 1 => {
                        Ok(Val::HLin(from, w, Some(bias)))
                    }
                    (Val::HLin(from, w, bias), Val::LinStep(id, t)) => match from {
                        HFrom::Step(c, prev) => {
                            let ch = &mut self.chains[c];
                            if ch.lin != id || prev + 1 != t || ch.steps != t {
                                return fail("adds a step's projection out of order");
                            }
                            match &ch.w_hh {
                                None => ch.w_hh = Some((w, bias)),
                                Some((w0, b0)) => {
                                    let b_same = match (b0, &bias) {
                                        (None, None) => true,
                                        (Some(p), Some(q)) => same(p, q),
                                        _ => false,
                                    };
                                    if !same(w0, &w) || !b_same {
                                        return fail(
                                            "uses another hidden weight than the earlier steps",
                                        );
                                    }
                                }
                            }
                            Ok(Val::Pre(c, t))
                        }
                        HFrom::Init(init) => {
                            if t != 0 {
                                return fail("starts from the initial state at a later step");
                            }
                            self.chains.push(Chain {
                                lin: id,
                                w_hh: Some((w, bias)),
                                folded: None,
                                init,
                                act: None,
                                steps: 0,
                            });
                            Ok(Val::Pre(self.chains.len() - 1, 0))
                        }
                    },
                    (Val::LinStep(id, 0), Val::Const(c)) => {
                        self.chains.push(Chain {
                            lin: id,
                            w_hh: None,
                            folded: Some(c),
                            init: Init::Zeros,
                            act: None,
                            steps: 0,
                        });
                        Ok(Val::Pre(self.chains.len() - 1, 0))
                    }
                    _ => fail("is not a step of an unrolled RNN"),
                }
            }
            "Tanh" | "Relu" => {
                let Some(Val::Pre(c, t)) = a else {
                    return fail("is not a step's activation");
                };
                let act = if op == "Tanh" {
                    Nonlinearity::Tanh
                } else {
                    Nonlinearity::Relu
                };
                let ch = &mut self.chains[c];
                if ch.act.is_some_and(|x| x != act) {
                    return fail("changes the activation between steps");
                }
                ch.act = Some(act);
                ch.steps = t + 1;
                Ok(Val::Hid(c, t))
            }
            "Slice" => {
                let Some(Val::Lin(id)) = a else {
                    return fail("slices an unrolled value other than a projection");
                };
                let ints = |i: usize| -> Option<Vec<i64>> {
                    match vals.get(i).cloned().flatten() {
                        Some(Val::Const(c)) => c.ints().map(<[i64]>::to_vec),
                        _ => None,
                    }
                };
                let (s, e, ax, st) = (ints(1), ints(2), ints(3), ints(4));
                if ax.as_deref().is_some_and(|a| a != [0]) {
                    return fail("slices a projection along an axis other than time");
                }
                match (s.as_deref(), e.as_deref(), st.as_deref()) {
                    (Some(&[-1]), Some(&[end]), Some(&[-1])) if end < -(1 << 30) => {
                        let mut l = self.lins[id].clone();
                        if l.flipped {
                            return fail("flips a flipped projection");
                        }
                        l.flipped = true;
                        self.lins.push(l);
                        Ok(Val::Lin(self.lins.len() - 1))
                    }
                    (Some(&[s]), Some(&[e]), None | Some(&[1])) if s >= 0 && e == s + 1 => {
                        Ok(Val::LinStep(id, s as usize))
                    }
                    _ => fail("slices a projection other than one step or a flip"),
                }
            }
            "Squeeze" | "Unsqueeze" | "Identity" => match a {
                Some(v @ (Val::LinStep(..) | Val::Hid(..))) => Ok(v),
                _ => fail("squeezes an unrolled value other than a step"),
            },
            "Transpose" => match a {
                // The output's orientation (batch first) is PyTorch's, read from the input.
                Some(v @ (Val::Steps(_) | Val::UnSeq(_))) => Ok(v),
                _ => fail("transposes an unrolled value other than a layer output"),
            },
            "Concat" => {
                let parts: Vec<Val> = vals.iter().flatten().cloned().collect();
                let axis = super::tensor::Attrs(node).int("axis", 0)?;
                if !parts.is_empty() && parts.iter().all(|p| matches!(p, Val::Hid(..))) && axis == 0
                {
                    let steps: Vec<(usize, usize)> = parts
                        .iter()
                        .map(|p| match p {
                            Val::Hid(c, t) => (*c, *t),
                            _ => unreachable!("checked"),
                        })
                        .collect();
                    let c = steps[0].0;
                    let n = steps.len();
                    let forward = steps
                        .iter()
                        .enumerate()
                        .all(|(i, &(cc, t))| cc == c && t == i);
                    let backward = steps
                        .iter()
                        .enumerate()
                        .all(|(i, &(cc, t))| cc == c && t == n - 1 - i);
                    let flipped = self.lins[self.chains[c].lin].flipped;
                    if n == self.chains[c].steps && ((forward && !flipped) || (backward && flipped))
                    {
                        return Ok(Val::Steps(c));
                    }
                    // Final states of several chains: rows of h_n.
                    if steps.iter().all(|&(cc, t)| t + 1 == self.chains[cc].steps) {
                        return Ok(Val::State {
                            rows: steps
                                .iter()
                                .map(|&(cc, _)| (super::import::CHAIN_ROW + cc, false))
                                .collect(),
                            axes: vec![
                                super::import::Axis::Rows,
                                super::import::Axis::Batch,
                                super::import::Axis::Hidden,
                            ],
                        });
                    }
                    return fail("concatenates steps that are neither a whole direction in time order nor final states");
                }
                if let [Val::Steps(f), Val::Steps(r)] = parts.as_slice() {
                    if axis == 2 || axis == -1 {
                        return Ok(Val::UnSeq(vec![*f, *r]));
                    }
                }
                fail("concatenates unrolled values in a way an RNN does not")
            }
            _ => fail("is not part of an unrolled RNN"),
        }
    }

    /// Turns the chains of steps into layers, in the order their projections were built.
    pub(super) fn unrolled_layers(&mut self) -> Result<(), OnnxError> {
        let mut groups: Vec<(LinSrc, Vec<usize>)> = Vec::new();
        for (c, ch) in self.chains.iter().enumerate() {
            let src = &self.lins[ch.lin].src;
            match groups.iter_mut().find(|(s, _)| s == src) {
                Some((_, v)) => v.push(c),
                None => groups.push((src.clone(), vec![c])),
            }
        }
        let mut layer_of_chains: Vec<(Vec<usize>, usize)> = Vec::new();
        for (src, mut chains) in groups {
            chains.sort_by_key(|&c| self.lins[self.chains[c].lin].flipped);
            let label = format!(
                "unrolled RNN layer reading {}",
                match &src {
                    LinSrc::Input(n, _) => format!("graph input {n:?}"),
                    LinSrc::Chains(_) => "the previous layer".into(),
                }
            );
            let bad = |m: String| OnnxError(format!("{label}: {m}"));
            let flips: Vec<bool> = chains
                .iter()
                .map(|&c| self.lins[self.chains[c].lin].flipped)
                .collect();
            if !(flips == [false] || flips == [false, true]) {
                return Err(bad(
                    "its directions are not one forward and at most one reverse".into(),
                ));
            }
            let dirs = chains.len();
            let source = match &src {
                LinSrc::Input(n, bf) => Ok((n.clone(), *bf)),
                LinSrc::Chains(cs) => match layer_of_chains.iter().find(|(v, _)| v == cs) {
                    Some((_, l)) => Err(*l),
                    None => {
                        return Err(bad("reads steps that are not a whole layer's output".into()))
                    }
                },
            };
            let mut weights = Vec::new();
            let (mut hidden, mut input_size, mut bias, mut act) = (0, 0, false, Nonlinearity::Tanh);
            let mut inits = Vec::new();
            let steps = self.chains[chains[0]].steps;
            for (d, &c) in chains.iter().enumerate() {
                let ch = &self.chains[c];
                let lin = &self.lins[ch.lin];
                if ch.steps != steps {
                    return Err(bad("its directions run different numbers of steps".into()));
                }
                let Some((w_hh, b_hh)) = &ch.w_hh else {
                    return Err(bad(
                        "the export had one time step and zero initial states, so W_hh was folded away; export with a longer example sequence".into(),
                    ));
                };
                (input_size, hidden) = (lin.w.dims[0], lin.w.dims[1]);
                if hidden == 0 || input_size == 0 {
                    return Err(bad(format!("W_ih has an empty shape {:?}", lin.w.dims)));
                }
                if w_hh.dims != [hidden, hidden] {
                    return Err(bad(format!(
                        "W_hh has shape {:?}, expected ({hidden}, {hidden})",
                        w_hh.dims
                    )));
                }
                if lin.b.is_some() != b_hh.is_some() {
                    return Err(bad("has one bias of b_ih and b_hh but not the other".into()));
                }
                bias = lin.b.is_some();
                act = ch.act.unwrap_or(Nonlinearity::Tanh);
                if let Some(folded) = &ch.folded {
                    let vals = folded.floats().unwrap_or(&[]);
                    let want = b_hh
                        .as_ref()
                        .and_then(|b| b.floats().map(<[f32]>::to_vec))
                        .unwrap_or_else(|| vec![0.0; hidden]);
                    if vals.is_empty()
                        || vals.len() % hidden != 0
                        || vals.chunks(hidden).any(|r| r != want.as_slice())
                    {
                        return Err(bad("its first step starts from a constant that is not zero states (b_hh on every row)".into()));
                    }
                }
                inits.push(ch.init.clone());
                let sfx = format!(
                    "{}{}",
                    super::import::LAYER,
                    if d == 1 { "_reverse" } else { "" }
                );
                weights.push((format!("weight_ih{sfx}"), transpose(&lin.w)));
                weights.push((format!("weight_hh{sfx}"), transpose(w_hh)));
                if let (Some(bi), Some(bh)) = (&lin.b, b_hh) {
                    weights.push((format!("bias_ih{sfx}"), bi.clone()));
                    weights.push((format!("bias_hh{sfx}"), bh.clone()));
                }
            }
            let init_h = match inits.as_slice() {
                [one] => one.clone(),
                [Init::Rows {
                    input: a,
                    rows: (s, e),
                }, Init::Rows {
                    input: b,
                    rows: (s2, e2),
                }] if a == b && e == s2 => {
                    let _ = e2;
                    Init::Rows {
                        input: a.clone(),
                        rows: (*s, *e2),
                    }
                }
                [Init::Zeros, Init::Zeros] => Init::Zeros,
                _ => return Err(bad(
                    "its directions start from states that are not consecutive rows of one input"
                        .into(),
                )),
            };
            self.layers.push(Layer {
                label,
                cell: CellKind::Rnn,
                nonlinearity: act,
                hidden,
                dirs,
                source,
                weights,
                bias,
                input_size,
                init_h,
                init_c: Init::Zeros,
                lengths: None,
                linear_before_reset: true,
                peephole: false,
            });
            layer_of_chains.push((chains, self.layers.len() - 1));
        }
        Ok(())
    }
}

/// A 2-D matrix transposed (`W^T` as stored by MatMul back to PyTorch's `W`).
fn transpose(c: &Const) -> Const {
    let (r, k) = (c.dims[0], c.dims[1]);
    let v = c.floats().unwrap_or(&[]);
    Const {
        dims: vec![k, r],
        data: Data::F32((0..r * k).map(|i| v[(i % r) * k + i / r]).collect()),
    }
}
