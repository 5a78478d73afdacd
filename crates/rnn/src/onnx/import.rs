//! Reading an ONNX graph back into recurrent stacks.
//!
//! The graph is interpreted node by node over *abstract values*: instead of numbers, every
//! value says what it is in the recurrent stack's terms — the graph's input with its axes
//! permuted, a layer's output `Y` with axes `(time, direction, batch, hidden)` transposed,
//! squeezed or reshaped, the rows of `h0`, the zero states built from `Shape`, `Gather`,
//! `Unsqueeze`, `Concat` and `Expand` or `ConstantOfShape`, constant tensors. Each glue
//! operator (Transpose, Reshape, Squeeze, Unsqueeze, Concat, Slice, Shape, Gather, Expand,
//! ConstantOfShape, Cast, Identity, Constant) is applied with its ONNX meaning; what it cannot
//! mean for a recurrent stack (a reshape that mixes time and batch, a slice of a sequence) is an
//! error. Every `RNN`, `LSTM` and `GRU` node must read the graph input or the previous layer's
//! output in the layout its `layout` attribute says, and its initial states must be zeros or
//! rows `k*D..(k+1)*D` of one graph input, as PyTorch's exporters write them. Any other operator
//! is listed by name in the error: nothing is silently dropped.

use std::collections::HashMap;
use std::path::Path;

use super::gates::{onnx_to_torch_bias, onnx_to_torch_peephole, onnx_to_torch_weight};
use super::proto::{GraphProto, ModelProto, NodeProto};
use super::tensor::{node_label, read_tensor, Attrs, Const, Data};
use super::unrolled::HFrom;
use super::OnnxError;
use crate::config::{CellKind, Nonlinearity, RecurrentConfig};
use crate::io::{load_state_dict, TensorData};
use crate::recurrent::Recurrent;

/// What one axis of an abstract tensor means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Axis {
    /// Axis `i` of a graph input, as declared.
    In(usize),
    /// Time steps of a layer's output.
    Time,
    /// The batch of a layer's output or state.
    Batch,
    /// Directions of a layer's output (`num_directions`).
    Dir,
    /// Hidden features of one direction.
    Hidden,
    /// All output features of a layer (directions times hidden).
    Feat,
    /// Rows of a state: (layer, direction) pairs.
    Rows,
    /// A size-1 axis added by `Unsqueeze`.
    One,
}

/// One row of a state tensor built from layer outputs: node index, and `c` (true) or `h`.
type Row = (usize, bool);

/// Rows of states from unrolled chains are `(CHAIN_ROW + chain, false)`.
pub(super) const CHAIN_ROW: usize = usize::MAX / 2;

/// Stands for `_l{k}` in keys until the layer's place in its stack is known.
pub(super) const LAYER: &str = "\u{1}layer\u{1}";

/// An abstract value of the graph.
#[derive(Clone, Debug)]
pub(super) enum Val {
    /// A constant tensor.
    Const(Const),
    /// A 1-D integer vector of dimensions (from `Shape`), each described by its meaning.
    Dims(Vec<Option<i64>>),
    /// A zero-filled tensor (its shape is whatever the stack needs).
    Zeros,
    /// A graph input; `rows` is the selection made on its first declared axis by `Slice`.
    Input {
        name: String,
        axes: Vec<Axis>,
        rows: Option<(usize, usize)>,
    },
    /// Output `Y` of recurrent node `node`.
    Seq { node: usize, axes: Vec<Axis> },
    /// States `Y_h` / `Y_c` of recurrent nodes, rows concatenated.
    State { rows: Vec<Row>, axes: Vec<Axis> },
    /// Produced by an operator rnn does not import.
    Foreign,
    /// An unrolled RNN's input projection (index into the projections).
    Lin(usize),
    /// One time step of a projection.
    LinStep(usize, usize),
    /// `h @ W_hh^T (+ b_hh)` of an unrolled RNN.
    HLin(HFrom, Const, Option<Const>),
    /// Step `t` of chain `c` before its activation.
    Pre(usize, usize),
    /// Hidden state after step `t` of chain `c`.
    Hid(usize, usize),
    /// All steps of chain `c`, in time order: one direction's output.
    Steps(usize),
    /// An unrolled layer's output: its chains' steps, directions concatenated.
    UnSeq(Vec<usize>),
}

/// How a recurrent node gets its initial state.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Init {
    Zeros,
    Rows { input: String, rows: (usize, usize) },
}

/// One `RNN`/`LSTM`/`GRU` node as read.
#[derive(Debug)]
pub(super) struct Layer {
    pub(super) label: String,
    pub(super) cell: CellKind,
    pub(super) nonlinearity: Nonlinearity,
    pub(super) hidden: usize,
    pub(super) dirs: usize,
    /// `None`: reads graph input (name, batch_first); `Some(j)`: reads node `j`'s output.
    pub(super) source: Result<(String, bool), usize>,
    pub(super) weights: Vec<(String, Const)>,
    pub(super) bias: bool,
    pub(super) input_size: usize,
    pub(super) init_h: Init,
    pub(super) init_c: Init,
    pub(super) lengths: Option<String>,
    /// GRU: ONNX's `linear_before_reset != 0` (PyTorch's GRU); `true` for the other cells.
    pub(super) linear_before_reset: bool,
    /// LSTM: the node has peepholes `P` (kept as `weight_ph` in `weights`).
    pub(super) peephole: bool,
}

/// One recurrent stack found in an ONNX graph, with how it connects to the graph.
#[derive(Debug)]
pub struct ImportedStack {
    /// The stack, with PyTorch's keys and configuration.
    pub model: Recurrent,
    /// The graph input holding the sequences.
    pub input: String,
    /// The graph inputs holding the initial states `h0` (and `c0`), when not zeros.
    pub initial_states: Vec<String>,
    /// The graph input holding the sequence lengths (`sequence_lens`), run as a packed batch.
    pub lengths: Option<String>,
    /// The recurrent nodes, first layer first.
    pub nodes: Vec<String>,
}

/// Interprets a decoded model; `dir` resolves external data.
pub fn stacks(model: &ModelProto, dir: &Path) -> Result<Vec<ImportedStack>, OnnxError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError("the model has no graph".into()))?;
    for op in &model.opset_import {
        let domain = op.domain();
        if !(domain.is_empty() || domain == "ai.onnx") {
            continue;
        }
        if op.version() < 7 {
            return Err(OnnxError(format!(
                "opset {} is older than 7, the first with today's RNN, LSTM and GRU",
                op.version()
            )));
        }
    }
    let mut it = Interp {
        dir,
        vals: HashMap::new(),
        layers: Vec::new(),
        foreign: Vec::new(),
        lins: Vec::new(),
        chains: Vec::new(),
    };
    it.load(graph)?;
    for node in &graph.node {
        it.node(node)?;
    }
    if !it.chains.is_empty() && it.foreign.is_empty() {
        it.unrolled_layers()?;
    }
    if it.layers.is_empty() && it.foreign.is_empty() {
        return Err(OnnxError(
            "the graph has no RNN, LSTM or GRU node and no unrolled RNN".into(),
        ));
    }
    if !it.foreign.is_empty() {
        const SHOWN: usize = 8;
        let mut list = it.foreign[..it.foreign.len().min(SHOWN)].join(", ");
        if it.foreign.len() > SHOWN {
            list.push_str(&format!(" and {} more", it.foreign.len() - SHOWN));
        }
        return Err(OnnxError(format!(
            "rnn imports recurrent stacks (RNN, LSTM, GRU and the glue around them) and nothing \
             else; this graph also has: {list}"
        )));
    }
    for out in &graph.output {
        match it.vals.get(out.name()) {
            Some(
                Val::Seq { .. }
                | Val::State { .. }
                | Val::Input { .. }
                | Val::Steps(_)
                | Val::UnSeq(_)
                | Val::Hid(..),
            ) => {}
            _ => {
                return Err(OnnxError(format!(
                    "graph output {:?} is not an output or state of the recurrent stack",
                    out.name()
                )))
            }
        }
    }
    let mut metadata_config = None;
    for p in &model.metadata_props {
        if p.key() == super::CONFIG_KEY {
            metadata_config = RecurrentConfig::from_json(p.value()).ok();
        }
    }
    it.assemble(metadata_config)
}

pub(super) struct Interp<'a> {
    dir: &'a Path,
    vals: HashMap<String, Val>,
    pub(super) layers: Vec<Layer>,
    foreign: Vec<String>,
    pub(super) lins: Vec<super::unrolled::Lin>,
    pub(super) chains: Vec<super::unrolled::Chain>,
}

fn err<T>(node: &NodeProto, m: impl std::fmt::Display) -> Result<T, OnnxError> {
    Err(OnnxError(format!("{}: {m}", node_label(node))))
}

impl Interp<'_> {
    fn load(&mut self, graph: &GraphProto) -> Result<(), OnnxError> {
        for t in &graph.initializer {
            let c = read_tensor(t, self.dir, &format!("initializer {:?}", t.name()))?;
            self.vals.insert(t.name().to_string(), Val::Const(c));
        }
        if !graph.sparse_initializer.is_empty() {
            return Err(OnnxError(
                "sparse initializers are not supported".to_string(),
            ));
        }
        for input in &graph.input {
            if self.vals.contains_key(input.name()) {
                continue; // an input with a default value: the initializer
            }
            let rank = input
                .r#type
                .as_ref()
                .and_then(|t| match &t.value {
                    Some(super::proto::type_proto::Value::TensorType(tt)) => {
                        tt.shape.as_ref().map(|s| s.dim.len())
                    }
                    _ => None,
                })
                .unwrap_or(3);
            self.vals.insert(
                input.name().to_string(),
                Val::Input {
                    name: input.name().to_string(),
                    axes: (0..rank).map(Axis::In).collect(),
                    rows: None,
                },
            );
        }
        Ok(())
    }

    pub(super) fn get(&self, node: &NodeProto, i: usize) -> Result<Option<&Val>, OnnxError> {
        match node.input.get(i).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(name) => match self.vals.get(name) {
                Some(v) => Ok(Some(v)),
                None => err(
                    node,
                    format!("input {name:?} is not defined before it is used"),
                ),
            },
        }
    }

    fn need(&self, node: &NodeProto, i: usize) -> Result<&Val, OnnxError> {
        self.get(node, i)?
            .ok_or_else(|| OnnxError(format!("{}: input {i} is missing", node_label(node))))
    }

    fn ints_input(&self, node: &NodeProto, i: usize) -> Result<Option<Vec<i64>>, OnnxError> {
        match self.get(node, i)? {
            None => Ok(None),
            Some(Val::Const(c)) => match c.ints() {
                Some(v) => Ok(Some(v.to_vec())),
                None => err(node, format!("input {i} must be integers")),
            },
            Some(_) => err(node, format!("input {i} must be a constant")),
        }
    }

    fn set(&mut self, node: &NodeProto, i: usize, v: Val) {
        if let Some(name) = node.output.get(i) {
            if !name.is_empty() {
                self.vals.insert(name.clone(), v);
            }
        }
    }

    fn node(&mut self, node: &NodeProto) -> Result<(), OnnxError> {
        let domain = node.domain();
        let op = node.op_type();
        if !(domain.is_empty() || domain == "ai.onnx") {
            return self.foreign(node);
        }
        let inputs: Vec<Option<Val>> = (0..node.input.len())
            .map(|i| self.get(node, i).map(|v| v.cloned()))
            .collect::<Result<_, _>>()?;
        let recurrent = matches!(op, "RNN" | "LSTM" | "GRU");
        // A recurrent node reading a foreign X (an embedding, say) is still read, so that the
        // error lists only what is not recurrent.
        let skip = usize::from(recurrent);
        if inputs
            .iter()
            .skip(skip)
            .flatten()
            .any(|v| matches!(v, Val::Foreign))
        {
            return self.foreign(node);
        }
        if recurrent {
            return self.recurrent(node);
        }
        let result = match self.unrolled(node, op) {
            Some(r) => r,
            None => self.glue(node, op),
        };
        let out = match result {
            Ok(v) => v,
            // A glue operator used for something else is an operator beyond the stack.
            Err(OnnxError(why)) => {
                let label = node_label(node);
                let why = why
                    .strip_prefix(&format!("{label}: "))
                    .unwrap_or(&why)
                    .to_string();
                if why.is_empty() {
                    self.foreign.push(label);
                } else {
                    self.foreign.push(format!("{label} ({why})"));
                }
                for i in 1..node.output.len() {
                    self.set(node, i, Val::Foreign);
                }
                Val::Foreign
            }
        };
        self.set(node, 0, out);
        Ok(())
    }

    fn glue(&self, node: &NodeProto, op: &str) -> Result<Val, OnnxError> {
        Ok(match op {
            "Constant" => Val::Const(constant(node, self.dir)?),
            "Identity" => self.need(node, 0)?.clone(),
            "Cast" => match self.need(node, 0)? {
                Val::Const(c) => Val::Const(cast(node, c)?),
                other => other.clone(),
            },
            "Shape" => self.shape(node)?,
            "Gather" => self.gather(node)?,
            "Unsqueeze" | "Squeeze" => self.squeeze(node, op == "Unsqueeze")?,
            "Concat" => self.concat(node)?,
            "Expand" => match self.need(node, 0)? {
                Val::Zeros => Val::Zeros,
                Val::Const(c) if c.is_zero() => Val::Zeros,
                _ => return err(node, "expands something other than zeros"),
            },
            "ConstantOfShape" => {
                let value = match Attrs(node).get("value").and_then(|a| a.t.as_ref()) {
                    None => None,
                    Some(t) => Some(read_tensor(t, self.dir, "ConstantOfShape value")?),
                };
                match value {
                    Some(v) if !v.is_zero() => {
                        return err(
                            node,
                            "fills with a nonzero value; rnn's states start at zero",
                        )
                    }
                    _ => Val::Zeros,
                }
            }
            "Transpose" => self.transpose(node)?,
            "Reshape" => self.reshape(node)?,
            "Slice" => self.slice(node)?,
            _ => return Err(OnnxError(String::new())),
        })
    }

    fn foreign(&mut self, node: &NodeProto) -> Result<(), OnnxError> {
        self.foreign.push(node_label(node));
        for i in 0..node.output.len() {
            self.set(node, i, Val::Foreign);
        }
        Ok(())
    }

    fn shape(&self, node: &NodeProto) -> Result<Val, OnnxError> {
        let rank = match self.need(node, 0)? {
            Val::Const(c) => {
                return Ok(Val::Dims(c.dims.iter().map(|&d| Some(d as i64)).collect()))
            }
            Val::Input { axes, .. } | Val::Seq { axes, .. } | Val::State { axes, .. } => axes.len(),
            _ => {
                return err(
                    node,
                    "takes the shape of a value that is not a tensor of the stack",
                )
            }
        };
        let a = Attrs(node);
        let clamp = |v: i64| -> usize {
            let v = if v < 0 { v + rank as i64 } else { v };
            v.clamp(0, rank as i64) as usize
        };
        let start = clamp(a.int("start", 0)?);
        let end = clamp(a.int("end", rank as i64)?);
        Ok(Val::Dims(vec![None; end.saturating_sub(start)]))
    }

    fn gather(&self, node: &NodeProto) -> Result<Val, OnnxError> {
        let idx = match self.need(node, 1)? {
            Val::Const(c) if c.ints().is_some() => c.clone(),
            _ => return err(node, "gathers with indices that are not constant"),
        };
        match self.need(node, 0)? {
            Val::Dims(d) => {
                let pick = |i: i64| {
                    let j = if i < 0 { i + d.len() as i64 } else { i };
                    d.get(usize::try_from(j).unwrap_or(usize::MAX))
                        .copied()
                        .ok_or_else(|| {
                            OnnxError(format!("{}: index {i} out of range", node_label(node)))
                        })
                };
                let v: Vec<Option<i64>> = idx
                    .ints()
                    .unwrap_or(&[])
                    .iter()
                    .map(|&i| pick(i))
                    .collect::<Result<_, _>>()?;
                // A scalar index gives a scalar: kept as a one-element vector of dims.
                Ok(Val::Dims(v))
            }
            Val::Const(c) if c.dims.len() == 1 && c.ints().is_some() => {
                let vals = c.ints().unwrap_or(&[]);
                let mut out = Vec::new();
                for &i in idx.ints().unwrap_or(&[]) {
                    let j = if i < 0 { i + vals.len() as i64 } else { i };
                    match usize::try_from(j).ok().and_then(|j| vals.get(j)) {
                        Some(&v) => out.push(v),
                        None => return err(node, format!("index {i} out of range")),
                    }
                }
                Ok(Val::Const(Const {
                    dims: idx.dims.clone(),
                    data: Data::I64(out),
                }))
            }
            _ => err(
                node,
                "is not a shape computation (rnn imports a Gather only on shapes)",
            ),
        }
    }

    fn axes_of(&self, node: &NodeProto, rank: usize) -> Result<Option<Vec<usize>>, OnnxError> {
        let raw = match self.ints_input(node, 1)? {
            Some(v) => Some(v),
            None => Attrs(node).ints("axes"),
        };
        let Some(raw) = raw else { return Ok(None) };
        let mut out = Vec::new();
        for a in raw {
            let b = if a < 0 { a + rank as i64 } else { a };
            match usize::try_from(b) {
                Ok(b) if b < rank => out.push(b),
                _ => return err(node, format!("axis {a} out of range for rank {rank}")),
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(Some(out))
    }

    fn squeeze(&self, node: &NodeProto, unsqueeze: bool) -> Result<Val, OnnxError> {
        let v = self.need(node, 0)?.clone();
        if let Val::Const(c) = &v {
            // Shapes only change.
            let rank = if unsqueeze {
                c.dims.len() + self.axes_of(node, usize::MAX / 2)?.map_or(0, |a| a.len())
            } else {
                c.dims.len()
            };
            let axes = self.axes_of(node, rank)?.unwrap_or_default();
            let mut dims = c.dims.clone();
            if unsqueeze {
                for &a in &axes {
                    if a > dims.len() {
                        return err(node, "axis out of range");
                    }
                    dims.insert(a, 1);
                }
            } else if axes.is_empty() {
                dims.retain(|&d| d != 1);
            } else {
                for &a in axes.iter().rev() {
                    if dims.get(a) != Some(&1) {
                        return err(
                            node,
                            format!("cannot squeeze axis {a} of shape {:?}", c.dims),
                        );
                    }
                    dims.remove(a);
                }
            }
            return Ok(Val::Const(Const {
                dims,
                data: c.data.clone(),
            }));
        }
        if let Val::Dims(d) = &v {
            return Ok(Val::Dims(d.clone()));
        }
        if let Val::Zeros = v {
            return Ok(Val::Zeros);
        }
        let (mut axes, dirs) = match &v {
            Val::Input { axes, .. } | Val::State { axes, .. } => (axes.clone(), 0),
            Val::Seq { axes, node: j } => (axes.clone(), self.layers[*j].dirs),
            _ => return err(node, "squeezes a value that is not a tensor of the stack"),
        };
        let rank = if unsqueeze {
            axes.len() + self.axes_of(node, usize::MAX / 2)?.map_or(0, |a| a.len())
        } else {
            axes.len()
        };
        let Some(list) = self.axes_of(node, rank)? else {
            return err(node, "without axes is ambiguous for a recurrent stack");
        };
        if unsqueeze {
            for &a in &list {
                if a > axes.len() {
                    return err(node, "axis out of range");
                }
                let new = if matches!(v, Val::State { .. }) && !axes.contains(&Axis::Rows) {
                    Axis::Rows
                } else {
                    Axis::One
                };
                axes.insert(a, new);
            }
        } else {
            for &a in list.iter().rev() {
                let ok = match axes[a] {
                    Axis::One => true,
                    Axis::Dir => dirs == 1,
                    Axis::Rows => matches!(&v, Val::State { rows, .. } if rows.len() == 1),
                    Axis::In(_) => true, // the declared size decides; ONNX Runtime checks it
                    _ => false,
                };
                if !ok {
                    return err(
                        node,
                        format!("squeezes axis {a} ({:?}), which is not of size 1", axes[a]),
                    );
                }
                let removed = axes.remove(a);
                if removed == Axis::Dir {
                    for x in axes.iter_mut() {
                        if *x == Axis::Hidden {
                            *x = Axis::Feat;
                        }
                    }
                }
            }
        }
        Ok(match v {
            Val::Input { name, rows, .. } => Val::Input { name, axes, rows },
            Val::State { rows, .. } => Val::State { rows, axes },
            Val::Seq { node, .. } => Val::Seq { node, axes },
            _ => unreachable!("handled above"),
        })
    }

    fn concat(&self, node: &NodeProto) -> Result<Val, OnnxError> {
        let axis = Attrs(node).int("axis", 0)?;
        let parts: Vec<&Val> = (0..node.input.len())
            .map(|i| self.need(node, i))
            .collect::<Result<_, _>>()?;
        if parts
            .iter()
            .all(|p| matches!(p, Val::Dims(_) | Val::Const(_)))
        {
            let mut all_const = true;
            let mut dims = Vec::new();
            for p in &parts {
                match p {
                    Val::Dims(d) => {
                        all_const = false;
                        dims.extend(d.iter().copied());
                    }
                    Val::Const(c) => match c.ints() {
                        Some(v) if c.dims.len() == 1 => dims.extend(v.iter().map(|&x| Some(x))),
                        _ => {
                            if parts
                                .iter()
                                .all(|p| matches!(p, Val::Const(c) if c.is_zero()))
                            {
                                return Ok(Val::Zeros);
                            }
                            return err(node, "concatenates constants that are not 1-D integers");
                        }
                    },
                    _ => unreachable!("checked"),
                }
            }
            if all_const {
                return Ok(Val::Const(Const::int_vec(
                    dims.into_iter().map(|d| d.unwrap_or(0)).collect(),
                )));
            }
            return Ok(Val::Dims(dims));
        }
        // States: concatenated along their rows.
        let mut rows = Vec::new();
        let mut shape: Option<Vec<Axis>> = None;
        for p in &parts {
            let Val::State { rows: r, axes } = p else {
                return err(node, "concatenates values that are not states of the stack (rnn imports Concat of h_n and c_n along the rows, and of shapes)");
            };
            let rank = axes.len() as i64;
            let a = if axis < 0 { axis + rank } else { axis };
            if usize::try_from(a).ok().and_then(|a| axes.get(a)) != Some(&Axis::Rows) {
                return err(
                    node,
                    format!("concatenates states along axis {axis}, not along their rows"),
                );
            }
            if shape.as_ref().is_some_and(|s| s != axes) {
                return err(node, "concatenates states laid out differently");
            }
            shape = Some(axes.clone());
            rows.extend(r.iter().copied());
        }
        Ok(Val::State {
            rows,
            axes: shape.unwrap_or_default(),
        })
    }

    fn transpose(&self, node: &NodeProto) -> Result<Val, OnnxError> {
        let v = self.need(node, 0)?.clone();
        let axes = match &v {
            Val::Input { axes, .. } | Val::Seq { axes, .. } | Val::State { axes, .. } => {
                axes.clone()
            }
            Val::Zeros => return Ok(Val::Zeros),
            _ => return err(node, "transposes a value that is not a tensor of the stack"),
        };
        let perm = Attrs(node)
            .ints("perm")
            .unwrap_or_else(|| (0..axes.len() as i64).rev().collect());
        let mut seen = vec![false; axes.len()];
        let mut out = Vec::new();
        for &p in &perm {
            match usize::try_from(p)
                .ok()
                .filter(|&p| p < axes.len() && !seen[p])
            {
                Some(p) => {
                    seen[p] = true;
                    out.push(axes[p]);
                }
                None => {
                    return err(
                        node,
                        format!("perm {perm:?} is not a permutation of {} axes", axes.len()),
                    )
                }
            }
        }
        if out.len() != axes.len() {
            return err(
                node,
                format!("perm {perm:?} is not a permutation of {} axes", axes.len()),
            );
        }
        Ok(match v {
            Val::Input { name, rows, .. } => Val::Input {
                name,
                axes: out,
                rows,
            },
            Val::Seq { node, .. } => Val::Seq { node, axes: out },
            Val::State { rows, .. } => Val::State { rows, axes: out },
            _ => unreachable!("checked"),
        })
    }

    /// Reshape: the one a stack needs merges a layer output's (direction, hidden) axes into its
    /// features; any other is refused.
    fn reshape(&self, node: &NodeProto) -> Result<Val, OnnxError> {
        let v = self.need(node, 0)?.clone();
        let target: Vec<Option<i64>> = match self.need(node, 1)? {
            Val::Const(c) => match c.ints() {
                Some(v) => v.iter().map(|&x| Some(x)).collect(),
                None => return err(node, "has a shape that is not integers"),
            },
            Val::Dims(d) => d.clone(),
            _ => {
                return err(
                    node,
                    "has a shape that is not a constant or a shape computation",
                )
            }
        };
        let allowzero = Attrs(node).int("allowzero", 0)? != 0;
        match v {
            Val::Zeros => Ok(Val::Zeros),
            Val::Const(c) => {
                let count = c.len() as i64;
                let mut dims = Vec::new();
                let mut infer = None;
                for (i, t) in target.iter().enumerate() {
                    match *t {
                        Some(0) if !allowzero => dims.push(*c.dims.get(i).unwrap_or(&0) as i64),
                        Some(-1) if infer.is_none() => {
                            infer = Some(i);
                            dims.push(1);
                        }
                        Some(d) if d >= 0 => dims.push(d),
                        _ => return err(node, format!("shape {target:?} is not a valid reshape")),
                    }
                }
                let Some(known) = dims.iter().try_fold(1i64, |p, &d| p.checked_mul(d)) else {
                    return err(node, format!("shape {target:?} overflows"));
                };
                if let Some(i) = infer {
                    if known == 0 || count % known != 0 {
                        return err(node, "cannot infer the -1 dimension");
                    }
                    dims[i] = count / known;
                }
                if dims.iter().try_fold(1i64, |p, &d| p.checked_mul(d)) != Some(count) {
                    return err(
                        node,
                        format!("shape {target:?} does not hold {count} values"),
                    );
                }
                Ok(Val::Const(Const {
                    dims: dims.into_iter().map(|d| d as usize).collect(),
                    data: c.data,
                }))
            }
            Val::Seq { node: j, axes } => {
                let Some(p) = axes.windows(2).position(|w| w == [Axis::Dir, Axis::Hidden]) else {
                    if target.len() == axes.len()
                        && target
                            .iter()
                            .all(|t| matches!(t, Some(0) | None) || *t == Some(-1))
                        && !allowzero
                    {
                        return Ok(Val::Seq { node: j, axes });
                    }
                    return err(node, format!("reshapes a layer output laid out {axes:?} to {target:?}, which is not merging its directions into features"));
                };
                let layer = &self.layers[j];
                let feat = (layer.dirs * layer.hidden) as i64;
                if target.len() + 1 != axes.len() {
                    return err(node, format!("reshapes a layer output laid out {axes:?} to {target:?}, which is not merging its directions into features"));
                }
                for (i, t) in target.iter().enumerate() {
                    let ok = if i == p {
                        matches!(*t, Some(-1)) || *t == Some(feat)
                    } else {
                        let src = if i < p { i } else { i + 1 };
                        (matches!(*t, Some(0)) && !allowzero && src == i)
                            || (matches!(*t, Some(-1)) && i != p)
                            || t.is_none()
                            || t.is_some_and(|d| {
                                d > 0 && matches!(axes[src], Axis::Time | Axis::Batch)
                            })
                    };
                    if !ok {
                        return err(node, format!("reshapes a layer output laid out {axes:?} to {target:?}, which is not merging its directions into features"));
                    }
                }
                let mut out = axes.clone();
                out.splice(p..p + 2, [Axis::Feat]);
                Ok(Val::Seq { node: j, axes: out })
            }
            _ => err(node, "reshapes a value that is not a layer output"),
        }
    }

    /// Slice: selects rows of a graph input holding initial states.
    fn slice(&self, node: &NodeProto) -> Result<Val, OnnxError> {
        let v = self.need(node, 0)?.clone();
        let (starts, ends) = match (self.ints_input(node, 1)?, self.ints_input(node, 2)?) {
            (Some(s), Some(e)) => (s, e),
            _ => {
                let a = Attrs(node);
                match (a.ints("starts"), a.ints("ends")) {
                    (Some(s), Some(e)) => (s, e),
                    _ => return err(node, "has no constant starts and ends"),
                }
            }
        };
        let axes = self
            .ints_input(node, 3)?
            .or_else(|| Attrs(node).ints("axes"));
        let steps = self.ints_input(node, 4)?;
        if steps.as_ref().is_some_and(|s| s.iter().any(|&s| s != 1)) {
            return err(node, "has steps other than 1");
        }
        let Val::Input {
            name,
            axes: vaxes,
            rows,
        } = v
        else {
            if let Val::Zeros = v {
                return Ok(Val::Zeros);
            }
            return err(
                node,
                "slices something other than a graph input holding initial states",
            );
        };
        let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
        if axes.len() != 1 || starts.len() != 1 || ends.len() != 1 {
            return err(node, "slices more than one axis");
        }
        let a = if axes[0] < 0 {
            axes[0] + vaxes.len() as i64
        } else {
            axes[0]
        };
        if usize::try_from(a).ok().and_then(|a| vaxes.get(a)) != Some(&Axis::In(0)) {
            return err(
                node,
                "slices an initial state along an axis other than its rows",
            );
        }
        let (s, e) = (starts[0], ends[0]);
        if s < 0 || e < s {
            return err(
                node,
                format!("slice {s}..{e} of the state rows is not a forward range"),
            );
        }
        let base = rows.map_or(0, |r| r.0);
        let start = base + s as usize;
        let mut end = base + usize::try_from(e).unwrap_or(usize::MAX).min(1 << 30);
        if let Some((_, hi)) = rows {
            end = end.min(hi);
        }
        Ok(Val::Input {
            name,
            axes: vaxes,
            rows: Some((start, end)),
        })
    }

    fn recurrent(&mut self, node: &NodeProto) -> Result<(), OnnxError> {
        let op = node.op_type();
        let cell = match op {
            "RNN" => CellKind::Rnn,
            "LSTM" => CellKind::Lstm,
            _ => CellKind::Gru,
        };
        let a = Attrs(node);
        let bad = |attr: &str, value: String, why: &str| -> OnnxError {
            OnnxError(format!(
                "{}: attribute {attr} = {value} is not supported: {why}",
                node_label(node)
            ))
        };
        let direction = a.string("direction", "forward")?;
        let dirs = match direction.as_str() {
            "forward" => 1,
            "bidirectional" => 2,
            "reverse" => {
                return Err(bad(
                    "direction",
                    "\"reverse\"".into(),
                    "PyTorch's layers run forward, or both ways (bidirectional)",
                ))
            }
            other => {
                return Err(bad(
                    "direction",
                    format!("{other:?}"),
                    "expected forward or bidirectional",
                ))
            }
        };
        if let Some(clip) = a.float("clip")? {
            return Err(bad("clip", clip.to_string(), "PyTorch's cells do not clip"));
        }
        if cell == CellKind::Lstm {
            let f = a.int("input_forget", 0)?;
            if f != 0 {
                return Err(bad(
                    "input_forget",
                    f.to_string(),
                    "PyTorch's LSTM has a separate forget gate",
                ));
            }
        }
        // ONNX's default is 0 (reset before the product); PyTorch's GRU is 1.
        let linear_before_reset = cell != CellKind::Gru || a.int("linear_before_reset", 0)? != 0;
        for attr in ["activation_alpha", "activation_beta"] {
            if let Some(x) = a.get(attr) {
                return Err(bad(
                    attr,
                    format!("{:?}", x.floats),
                    "PyTorch's activations take no parameters",
                ));
            }
        }
        let defaults: &[&str] = match cell {
            CellKind::Rnn => &["Tanh"],
            CellKind::Lstm => &["Sigmoid", "Tanh", "Tanh"],
            CellKind::Gru => &["Sigmoid", "Tanh"],
        };
        let mut nonlinearity = Nonlinearity::Tanh;
        if let Some(acts) = a.strings("activations") {
            let per = defaults.len();
            let ok_len = acts.len() == per * dirs;
            let relu = cell == CellKind::Rnn
                && ok_len
                && acts.iter().all(|s| s.eq_ignore_ascii_case("relu"));
            let default = ok_len
                && acts
                    .iter()
                    .enumerate()
                    .all(|(i, s)| s.eq_ignore_ascii_case(defaults[i % per]));
            if relu {
                nonlinearity = Nonlinearity::Relu;
            } else if !default {
                return Err(bad(
                    "activations",
                    format!("{acts:?}"),
                    &format!(
                        "rnn runs {op} with {}{}",
                        defaults.join(", "),
                        if cell == CellKind::Rnn {
                            " or Relu"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        let layout = a.int("layout", 0)?;
        if !(0..=1).contains(&layout) {
            return Err(bad("layout", layout.to_string(), "expected 0 or 1"));
        }
        let weight = |i: usize, what: &str| -> Result<Option<Const>, OnnxError> {
            match self.get(node, i)? {
                None => Ok(None),
                Some(Val::Const(c)) if c.floats().is_some() => Ok(Some(c.clone())),
                Some(_) => err(
                    node,
                    format!("{what} (input {i}) is not a constant float tensor"),
                ),
            }
        };
        let gates = cell.gates();
        let w = weight(1, "W")?.ok_or_else(|| OnnxError(format!("{}: no W", node_label(node))))?;
        let r = weight(2, "R")?.ok_or_else(|| OnnxError(format!("{}: no R", node_label(node))))?;
        let b = weight(3, "B")?;
        let p = if cell == CellKind::Lstm {
            weight(7, "P")?
        } else {
            None
        };
        if w.dims.len() != 3 || w.dims[0] != dirs || w.dims[1] % gates != 0 || w.dims[1] == 0 {
            return err(
                node,
                format!(
                    "W has shape {:?}, expected ({dirs}, {gates}*hidden_size, input_size)",
                    w.dims
                ),
            );
        }
        let hidden = w.dims[1] / gates;
        let input_size = w.dims[2];
        let hs = a.int("hidden_size", hidden as i64)?;
        if hs != hidden as i64 {
            return err(
                node,
                format!("hidden_size = {hs} but W has shape {:?}", w.dims),
            );
        }
        if r.dims != [dirs, gates * hidden, hidden] {
            return err(
                node,
                format!(
                    "R has shape {:?}, expected ({dirs}, {}, {hidden})",
                    r.dims,
                    gates * hidden
                ),
            );
        }
        if let Some(b) = &b {
            if b.dims != [dirs, 2 * gates * hidden] {
                return err(
                    node,
                    format!(
                        "B has shape {:?}, expected ({dirs}, {})",
                        b.dims,
                        2 * gates * hidden
                    ),
                );
            }
        }
        if let Some(p) = &p {
            if p.dims != [dirs, 3 * hidden] {
                return err(
                    node,
                    format!(
                        "P has shape {:?}, expected ({dirs}, {})",
                        p.dims,
                        3 * hidden
                    ),
                );
            }
        }
        // The input sequence.
        let x = self.need(node, 0)?.clone();
        let source = match &x {
            Val::Input {
                name,
                axes,
                rows: None,
            } if axes.len() == 3 => {
                let (t, n) = if layout == 0 {
                    (axes[0], axes[1])
                } else {
                    (axes[1], axes[0])
                };
                match (t, n, axes[2]) {
                    (Axis::In(0), Axis::In(1), Axis::In(2)) => Ok((name.clone(), false)),
                    (Axis::In(1), Axis::In(0), Axis::In(2)) => Ok((name.clone(), true)),
                    _ => return err(node, format!("reads graph input {name:?} with its axes {axes:?}, not as (time, batch, features) or (batch, time, features)")),
                }
            }
            Val::Seq { node: j, axes } => {
                let want = if layout == 0 {
                    [Axis::Time, Axis::Batch, Axis::Feat]
                } else {
                    [Axis::Batch, Axis::Time, Axis::Feat]
                };
                if axes.as_slice() != want {
                    return err(node, format!("reads {}'s output laid out as {axes:?}, expected {want:?} (layout = {layout})", self.layers[*j].label));
                }
                Err(*j)
            }
            Val::Foreign => Ok((String::new(), false)),
            _ => {
                return err(
                    node,
                    "X is neither a graph input nor the previous layer's output",
                )
            }
        };
        let init = |i: usize, what: &str| -> Result<Init, OnnxError> {
            match self.get(node, i)? {
                None | Some(Val::Zeros) => Ok(Init::Zeros),
                Some(Val::Const(c)) if c.is_zero() => Ok(Init::Zeros),
                Some(Val::Input { name, rows, .. }) => Ok(Init::Rows {
                    input: name.clone(),
                    rows: rows.unwrap_or((0, dirs)),
                }),
                Some(Val::Const(_)) => err(
                    node,
                    format!(
                        "{what} is a nonzero constant; rnn's layers take initial states as inputs"
                    ),
                ),
                Some(_) => err(
                    node,
                    format!("{what} is not zeros or rows of a graph input"),
                ),
            }
        };
        let init_h = init(5, "initial_h")?;
        let init_c = if cell == CellKind::Lstm {
            init(6, "initial_c")?
        } else {
            Init::Zeros
        };
        let lengths = match self.get(node, 4)? {
            None => None,
            Some(Val::Input { name, .. }) => Some(name.clone()),
            Some(_) => return err(node, "sequence_lens is not a graph input"),
        };
        let mut weights = Vec::new();
        for d in 0..dirs {
            let sfx = format!("{}{}", LAYER, if d == 1 { "_reverse" } else { "" });
            weights.push((format!("weight_ih{sfx}"), onnx_to_torch_weight(cell, &w, d)));
            weights.push((format!("weight_hh{sfx}"), onnx_to_torch_weight(cell, &r, d)));
            if let Some(b) = &b {
                let (bi, bh) = onnx_to_torch_bias(cell, b, d);
                weights.push((format!("bias_ih{sfx}"), bi));
                weights.push((format!("bias_hh{sfx}"), bh));
            }
            if let Some(p) = &p {
                weights.push((format!("weight_ph{sfx}"), onnx_to_torch_peephole(p, d)));
            }
        }
        let idx = self.layers.len();
        self.layers.push(Layer {
            label: node_label(node),
            cell,
            nonlinearity,
            hidden,
            dirs,
            source,
            weights,
            bias: b.is_some(),
            linear_before_reset,
            peephole: p.is_some(),
            input_size,
            init_h,
            init_c,
            lengths,
        });
        let y_axes = if layout == 0 {
            vec![Axis::Time, Axis::Dir, Axis::Batch, Axis::Hidden]
        } else {
            vec![Axis::Batch, Axis::Time, Axis::Dir, Axis::Hidden]
        };
        let s_axes = if layout == 0 {
            vec![Axis::Rows, Axis::Batch, Axis::Hidden]
        } else {
            vec![Axis::Batch, Axis::Rows, Axis::Hidden]
        };
        self.set(
            node,
            0,
            Val::Seq {
                node: idx,
                axes: y_axes,
            },
        );
        self.set(
            node,
            1,
            Val::State {
                rows: (0..dirs).map(|_| (idx, false)).collect(),
                axes: s_axes.clone(),
            },
        );
        self.set(
            node,
            2,
            Val::State {
                rows: (0..dirs).map(|_| (idx, true)).collect(),
                axes: s_axes,
            },
        );
        Ok(())
    }

    /// Groups the layers into stacks and builds each model.
    fn assemble(self, metadata: Option<RecurrentConfig>) -> Result<Vec<ImportedStack>, OnnxError> {
        let n = self.layers.len();
        let mut next: Vec<Option<usize>> = vec![None; n];
        for (i, l) in self.layers.iter().enumerate() {
            if let Err(j) = l.source {
                if let Some(k) = next[j] {
                    return Err(OnnxError(format!(
                        "{} and {} both read the output of {}: a stack is a chain of layers",
                        self.layers[k].label, l.label, self.layers[j].label
                    )));
                }
                next[j] = Some(i);
            }
        }
        let mut out = Vec::new();
        let single = self.layers.iter().filter(|l| l.source.is_ok()).count() == 1;
        for (start, first) in self.layers.iter().enumerate() {
            let Ok((input, batch_first)) = &first.source else {
                continue;
            };
            let mut chain = vec![start];
            while let Some(k) = next[*chain.last().expect("not empty")] {
                chain.push(k);
            }
            let layers: Vec<&Layer> = chain.iter().map(|&i| &self.layers[i]).collect();
            for l in &layers[1..] {
                let same = l.cell == first.cell
                    && l.hidden == first.hidden
                    && l.dirs == first.dirs
                    && l.bias == first.bias
                    && l.nonlinearity == first.nonlinearity
                    && l.lengths == first.lengths
                    && l.linear_before_reset == first.linear_before_reset
                    && l.peephole == first.peephole;
                if !same {
                    return Err(OnnxError(format!(
                        "{} and {} differ in cell, hidden_size, direction, bias, activation, sequence_lens, peepholes or linear_before_reset: PyTorch's stacked layers are alike",
                        first.label, l.label
                    )));
                }
            }
            let d = first.dirs;
            let mut initial_states = Vec::new();
            for (which, get) in [
                (
                    "initial_h",
                    (|l: &Layer| l.init_h.clone()) as fn(&Layer) -> Init,
                ),
                ("initial_c", |l: &Layer| l.init_c.clone()),
            ] {
                let inits: Vec<Init> = layers.iter().map(|l| get(l)).collect();
                if inits.iter().all(|i| *i == Init::Zeros) {
                    continue;
                }
                let Init::Rows { input: name, .. } = &inits[0] else {
                    return Err(OnnxError(format!("{}: {which} is zeros but a later layer's is a graph input; rnn takes the states of all layers or none", first.label)));
                };
                for (k, (init, l)) in inits.iter().zip(&layers).enumerate() {
                    let want = Init::Rows {
                        input: name.clone(),
                        rows: (k * d, (k + 1) * d),
                    };
                    if *init != want {
                        return Err(OnnxError(format!(
                            "{}: {which} is {init:?}, expected rows {}..{} of graph input {name:?} (PyTorch's (num_layers*num_directions, batch, hidden) states)",
                            l.label, k * d, (k + 1) * d
                        )));
                    }
                }
                initial_states.push(name.clone());
            }
            let mut config = RecurrentConfig::new(first.cell, first.input_size, first.hidden)
                .with_num_layers(layers.len())
                .with_nonlinearity(first.nonlinearity)
                .with_bias(first.bias)
                .with_batch_first(*batch_first)
                .with_bidirectional(d == 2)
                .with_linear_before_reset(first.linear_before_reset)
                .with_peephole(first.peephole);
            if let Some(m) = &metadata {
                let mut dropped = m.clone();
                dropped.dropout = 0.0;
                if single && dropped == config {
                    config.dropout = m.dropout;
                }
            }
            config
                .validate()
                .map_err(|e| OnnxError(format!("{}: {e}", first.label)))?;
            let mut tensors = std::collections::BTreeMap::new();
            for (k, l) in layers.iter().enumerate() {
                if l.input_size != config.layer_input_size(k) {
                    return Err(OnnxError(format!(
                        "{}: W reads {} features, but layer {k} of the stack gets {}",
                        l.label,
                        l.input_size,
                        config.layer_input_size(k)
                    )));
                }
                for (key, c) in &l.weights {
                    let key = key.replace(LAYER, &format!("_l{k}"));
                    let data = ndarray::ArrayD::from_shape_vec(
                        c.dims.clone(),
                        c.floats().unwrap_or(&[]).to_vec(),
                    )
                    .map_err(|e| OnnxError(format!("{}: {key}: {e}", l.label)))?;
                    tensors.insert(key, TensorData::F32(data));
                }
            }
            let model =
                Recurrent::new(config).map_err(|e| OnnxError(format!("{}: {e}", first.label)))?;
            load_state_dict(&model, &tensors, true)
                .map_err(|e| OnnxError(format!("{}: {e}", first.label)))?;
            out.push(ImportedStack {
                model,
                input: input.clone(),
                initial_states,
                lengths: first.lengths.clone(),
                nodes: layers.iter().map(|l| l.label.clone()).collect(),
            });
        }
        Ok(out)
    }
}

fn constant(node: &NodeProto, dir: &Path) -> Result<Const, OnnxError> {
    let a = Attrs(node);
    if let Some(t) = a.get("value").and_then(|x| x.t.as_ref()) {
        return read_tensor(t, dir, &node_label(node));
    }
    if let Some(x) = a.get("value_int") {
        return Ok(Const {
            dims: vec![],
            data: Data::I64(vec![x.i.unwrap_or(0)]),
        });
    }
    if let Some(x) = a.get("value_ints") {
        return Ok(Const::int_vec(x.ints.clone()));
    }
    if let Some(x) = a.get("value_float") {
        return Ok(Const {
            dims: vec![],
            data: Data::F32(vec![x.f.unwrap_or(0.0)]),
        });
    }
    if let Some(x) = a.get("value_floats") {
        return Ok(Const {
            dims: vec![x.floats.len()],
            data: Data::F32(x.floats.clone()),
        });
    }
    err(
        node,
        "has no value rnn can read (value, value_int(s) or value_float(s))",
    )
}

fn cast(node: &NodeProto, c: &Const) -> Result<Const, OnnxError> {
    use super::proto::tensor_proto::DataType;
    let to = Attrs(node).int("to", 0)?;
    let float = matches!(
        DataType::try_from(to as i32),
        Ok(DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16)
    );
    let data = match (&c.data, float) {
        (Data::F32(v), true) => Data::F32(v.clone()),
        (Data::I64(v), false) => Data::I64(v.clone()),
        (Data::I64(v), true) => Data::F32(v.iter().map(|&x| x as f32).collect()),
        (Data::F32(v), false) => Data::I64(v.iter().map(|&x| x as i64).collect()),
    };
    Ok(Const {
        dims: c.dims.clone(),
        data,
    })
}
