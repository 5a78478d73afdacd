//! Writing ONNX: a recurrent stack, or a character model, as a graph ONNX Runtime runs.
//!
//! Opset [`OPSET`] (17, IR version 8): `RNN`, `LSTM` and `GRU` have had their present form
//! since opset 14 and ONNX Runtime has run opset 17 since 1.11. The batch and sequence axes are
//! symbolic (`batch`, `sequence`), so one file serves every batch size and length.
//!
//! A recurrent stack becomes, per layer `k` (sequence first; a batch-first model gets a
//! `Transpose` at each end):
//!
//! ```text
//! h0_k = Slice(h0, k*D, (k+1)*D)                     (D, N, H)      likewise c0_k
//! Y, Y_h, Y_c = LSTM(X_k, W_k, R_k, B_k, , h0_k, c0_k)   Y: (L, D, N, H)
//! X_{k+1} = Reshape(Transpose(Y, [0, 2, 1, 3]), [0, 0, -1])   (L, N, D*H)
//! h_n = Concat(Y_h_0, Y_h_1, ...)                    (num_layers*D, N, H)
//! ```
//!
//! with the weights in ONNX's gate order (see [`gates`](super::gates)). The states are graph
//! inputs (`h0`, `c0`) and outputs (`h_n`, `c_n`), so a runtime can carry them from one call
//! to the next; pass zeros to start.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

use super::gates::{reorder, torch_block_of_onnx, PEEPHOLE_ONNX_OF_TORCH};
use super::proto::{
    tensor_proto::DataType, tensor_shape_proto::dimension::Value as DimValue, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::charlm::{CharLm, Vocab};
use crate::config::{CellKind, Nonlinearity, RecurrentConfig};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::module::Module;
use crate::recurrent::Recurrent;

/// The ONNX opset the exporter writes.
pub const OPSET: i64 = 17;
/// The IR version that goes with [`OPSET`].
pub const IR_VERSION: i64 = 8;

/// A graph under construction.
#[derive(Default)]
struct Builder {
    graph: GraphProto,
    count: usize,
}

/// A symbolic or fixed dimension of a graph input or output.
enum D {
    Sym(&'static str),
    Fixed(usize),
}

impl Builder {
    fn fresh(&mut self, stem: &str) -> String {
        self.count += 1;
        format!("{stem}_{}", self.count)
    }

    fn floats(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.graph.initializer.push(TensorProto {
            name: Some(name.to_string()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Float as i32),
            raw_data: Some(raw),
            ..Default::default()
        });
        name.to_string()
    }

    fn ints(&mut self, stem: &str, values: &[i64]) -> String {
        let name = self.fresh(stem);
        self.graph.initializer.push(TensorProto {
            name: Some(name.clone()),
            dims: vec![values.len() as i64],
            data_type: Some(DataType::Int64 as i32),
            int64_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) {
        self.graph.node.push(NodeProto {
            op_type: Some(op.to_string()),
            name: Some(format!("{op}_{}", self.graph.node.len())),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        });
    }

    fn value(name: &str, dtype: DataType, dims: &[D]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|d| super::proto::tensor_shape_proto::Dimension {
                value: Some(match d {
                    D::Sym(s) => DimValue::DimParam(s.to_string()),
                    D::Fixed(n) => DimValue::DimValue(*n as i64),
                }),
                ..Default::default()
            })
            .collect();
        ValueInfoProto {
            name: Some(name.to_string()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(dtype as i32),
                    shape: Some(TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn input(&mut self, name: &str, dtype: DataType, dims: &[D]) {
        self.graph.input.push(Self::value(name, dtype, dims));
    }

    fn output(&mut self, name: &str, dtype: DataType, dims: &[D]) {
        self.graph.output.push(Self::value(name, dtype, dims));
    }

    fn finish(self, name: &str, metadata: BTreeMap<String, String>) -> ModelProto {
        let mut graph = self.graph;
        graph.name = Some(name.to_string());
        ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(OPSET),
            }],
            producer_name: Some("rnn".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            graph: Some(graph),
            metadata_props: metadata
                .into_iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: Some(k),
                    value: Some(v),
                })
                .collect(),
            ..Default::default()
        }
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(super::proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(super::proto::attribute_proto::AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(super::proto::attribute_proto::AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn attr_strings(name: &str, v: &[&str]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(super::proto::attribute_proto::AttributeType::Strings as i32),
        strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..Default::default()
    }
}

/// Checks that ONNX's operators can express `config`.
fn expressible(config: &RecurrentConfig) -> Result<()> {
    if config.layer_norm {
        return Err(Error::Invalid(format!(
            "{}: layer_norm has no ONNX form (the LSTM operator normalises nothing); keep \
             the model in rnn's model file or safetensors, or export a model without layer_norm",
            config.cell.torch_name()
        )));
    }
    if config.proj_size > 0 {
        return Err(Error::Invalid(format!(
            "{}: proj_size = {} has no ONNX form (the LSTM operator has no projection of h); \
             export a model without proj_size",
            config.cell.torch_name(),
            config.proj_size
        )));
    }
    if config.zoneout > 0.0 {
        return Err(Error::Invalid(format!(
            "{}: zoneout = {} has no ONNX form (at evaluation each unit moves only 1 - zoneout \
             of the way to its new state, which ONNX's operators do not do); export a model \
             without zoneout",
            config.cell.torch_name(),
            config.zoneout
        )));
    }
    Ok(())
}

/// Adds the stack reading `x` (sequence first, `(L, N, input_size)`) with states from graph
/// inputs `h0` (and `c0`); returns the name of its output `(L, N, D*H)`. Also adds the graph
/// outputs `h_n` (and `c_n`).
fn add_stack(b: &mut Builder, model: &Recurrent, prefix: &str, x: &str) -> String {
    let c = model.config();
    let d = c.num_directions();
    let h = c.hidden_size;
    let g = c.cell.gates();
    let params: BTreeMap<String, ndarray::ArrayD<f32>> = model
        .named_parameters()
        .into_iter()
        .map(|(k, t)| (k, t.to_array()))
        .collect();
    let from = torch_block_of_onnx(c.cell);
    let lstm = c.cell == CellKind::Lstm;
    let mut x = x.to_string();
    let (mut hs, mut cs) = (Vec::new(), Vec::new());
    for k in 0..c.num_layers {
        let width = c.layer_input_size(k);
        let (mut w, mut r, mut bias, mut ph) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for dir in 0..d {
            let sfx = format!("_l{k}{}", if dir == 1 { "_reverse" } else { "" });
            let get = |name: &str| {
                params[&format!("{prefix}{name}{sfx}")]
                    .as_standard_layout()
                    .iter()
                    .copied()
                    .collect::<Vec<f32>>()
            };
            w.extend(reorder(&get("weight_ih"), &from, h, width));
            r.extend(reorder(&get("weight_hh"), &from, h, h));
            if c.bias {
                bias.extend(reorder(&get("bias_ih"), &from, h, 1));
                bias.extend(reorder(&get("bias_hh"), &from, h, 1));
            }
            if c.peephole {
                ph.extend(reorder(&get("weight_ph"), &PEEPHOLE_ONNX_OF_TORCH, h, 1));
            }
        }
        let wn = b.floats(&format!("W_l{k}"), &[d, g * h, width], &w);
        let rn = b.floats(&format!("R_l{k}"), &[d, g * h, h], &r);
        let bn = if c.bias {
            b.floats(&format!("B_l{k}"), &[d, 2 * g * h], &bias)
        } else {
            String::new()
        };
        let pn = if c.peephole {
            b.floats(&format!("P_l{k}"), &[d, 3 * h], &ph)
        } else {
            String::new()
        };
        let (s, e, ax) = (
            b.ints("start", &[(k * d) as i64]),
            b.ints("end", &[((k + 1) * d) as i64]),
            b.ints("axis", &[0]),
        );
        let h0 = format!("h0_l{k}");
        b.node("Slice", &["h0", &s, &e, &ax], &[&h0], vec![]);
        let c0 = format!("c0_l{k}");
        if lstm {
            b.node("Slice", &["c0", &s, &e, &ax], &[&c0], vec![]);
        }
        let mut attrs = vec![
            attr_int("hidden_size", h as i64),
            attr_string(
                "direction",
                if d == 2 { "bidirectional" } else { "forward" },
            ),
        ];
        match c.cell {
            CellKind::Gru => attrs.push(attr_int(
                "linear_before_reset",
                i64::from(c.linear_before_reset),
            )),
            CellKind::Rnn if c.nonlinearity == Nonlinearity::Relu => {
                attrs.push(attr_strings("activations", &vec!["Relu"; d]))
            }
            _ => {}
        }
        let (y, yh, yc) = (format!("Y_l{k}"), format!("Y_h_l{k}"), format!("Y_c_l{k}"));
        let mut inputs = vec![x.as_str(), &wn, &rn, &bn, "", &h0];
        let mut outputs = vec![y.as_str(), &yh];
        if lstm {
            inputs.push(&c0);
            outputs.push(&yc);
            if c.peephole {
                inputs.push(&pn);
            }
        }
        b.node(c.cell.torch_name(), &inputs, &outputs, attrs);
        let t = format!("Y_l{k}_t");
        b.node(
            "Transpose",
            &[&y],
            &[&t],
            vec![attr_ints("perm", &[0, 2, 1, 3])],
        );
        let shape = b.ints("shape", &[0, 0, -1]);
        let next = format!("X_l{}", k + 1);
        b.node("Reshape", &[&t, &shape], &[&next], vec![]);
        x = next;
        hs.push(yh);
        cs.push(yc);
    }
    let hs: Vec<&str> = hs.iter().map(String::as_str).collect();
    b.node("Concat", &hs, &["h_n"], vec![attr_int("axis", 0)]);
    if lstm {
        let cs: Vec<&str> = cs.iter().map(String::as_str).collect();
        b.node("Concat", &cs, &["c_n"], vec![attr_int("axis", 0)]);
    }
    for (state, out) in [("h0", "h_n"), ("c0", "c_n")] {
        if state == "h0" || lstm {
            b.input(
                state,
                DataType::Float,
                &[D::Fixed(c.num_layers * d), D::Sym("batch"), D::Fixed(h)],
            );
            b.output(
                out,
                DataType::Float,
                &[D::Fixed(c.num_layers * d), D::Sym("batch"), D::Fixed(h)],
            );
        }
    }
    x
}

fn write_model(path: &Path, model: &ModelProto) -> Result<()> {
    write_atomic(path, &model.encode_to_vec())
}

/// Writes a recurrent stack as ONNX: inputs `input` (`(sequence, batch, input_size)`, or
/// batch first), `h0` and, for an LSTM, `c0` (`(num_layers*D, batch, hidden_size)`); outputs
/// `output`, `h_n`, `c_n`, as PyTorch's module returns them. The configuration is kept as the
/// `rnn.config` metadata entry (the dropout probability has no ONNX form). `proj_size` is an
/// error: ONNX's LSTM has no projection.
pub fn export_recurrent(model: &Recurrent, path: impl AsRef<Path>) -> Result<()> {
    let c = model.config();
    expressible(c)?;
    let mut b = Builder::default();
    let (seq, batch) = (D::Sym("sequence"), D::Sym("batch"));
    let dims_in = if c.batch_first {
        [batch, seq, D::Fixed(c.input_size)]
    } else {
        [seq, batch, D::Fixed(c.input_size)]
    };
    b.input("input", DataType::Float, &dims_in);
    let x = if c.batch_first {
        b.node(
            "Transpose",
            &["input"],
            &["input_t"],
            vec![attr_ints("perm", &[1, 0, 2])],
        );
        "input_t"
    } else {
        "input"
    };
    let y = add_stack(&mut b, model, "", x);
    if c.batch_first {
        b.node(
            "Transpose",
            &[&y],
            &["output"],
            vec![attr_ints("perm", &[1, 0, 2])],
        );
    } else {
        b.node("Identity", &[&y], &["output"], vec![]);
    }
    let (seq, batch) = (D::Sym("sequence"), D::Sym("batch"));
    let out = D::Fixed(c.output_size());
    let dims_out = if c.batch_first {
        [batch, seq, out]
    } else {
        [seq, batch, out]
    };
    // The outputs in PyTorch's order: output first.
    b.graph
        .output
        .insert(0, Builder::value("output", DataType::Float, &dims_out));
    let meta = BTreeMap::from([(super::CONFIG_KEY.to_string(), c.to_json())]);
    write_model(path.as_ref(), &b.finish(c.cell.torch_name(), meta))
}

/// Writes a character model for step-by-step generation: inputs `tokens` (int64
/// `(sequence, batch)`), `h0` and, for an LSTM, `c0` (`(num_layers, batch, hidden_size)`);
/// outputs `logits` (`(sequence, batch, vocab_size)`), `h_n`, `c_n`. The embedding is a
/// `Gather` (of an identity matrix for a one-hot model), the head `MatMul` + `Add`. The
/// metadata holds the model's config (`rnn.charlm.config`) and the vocabulary (`rnn.vocab`,
/// the JSON of `vocab.json`).
pub fn export_charlm(model: &CharLm, vocab: &Vocab, path: impl AsRef<Path>) -> Result<()> {
    let cfg = model.config();
    let v = cfg.vocab_size;
    let params: BTreeMap<String, ndarray::ArrayD<f32>> = model
        .named_parameters()
        .into_iter()
        .map(|(k, t)| (k, t.to_array()))
        .collect();
    let flat =
        |name: &str| -> Vec<f32> { params[name].as_standard_layout().iter().copied().collect() };
    let mut b = Builder::default();
    b.input(
        "tokens",
        DataType::Int64,
        &[D::Sym("sequence"), D::Sym("batch")],
    );
    let table = if cfg.embed == 0 {
        let eye: Vec<f32> = (0..v * v)
            .map(|i| if i / v == i % v { 1.0 } else { 0.0 })
            .collect();
        b.floats("one_hot", &[v, v], &eye)
    } else {
        b.floats("embed.weight", &[v, cfg.embed], &flat("embed.weight"))
    };
    b.node(
        "Gather",
        &[&table, "tokens"],
        &["embedded"],
        vec![attr_int("axis", 0)],
    );
    let rnn = rnn_of(model)?;
    let y = add_stack(&mut b, &rnn, "", "embedded");
    let h = cfg.hidden_size;
    let w = flat("fc.weight"); // (V, H) -> transposed (H, V)
    let wt: Vec<f32> = (0..h * v).map(|i| w[(i % v) * h + i / v]).collect();
    let wn = b.floats("fc.weight_t", &[h, v], &wt);
    let bn = b.floats("fc.bias", &[v], &flat("fc.bias"));
    b.node("MatMul", &[&y, &wn], &["fc_mm"], vec![]);
    b.node("Add", &["fc_mm", &bn], &["logits"], vec![]);
    b.graph.output.insert(
        0,
        Builder::value(
            "logits",
            DataType::Float,
            &[D::Sym("sequence"), D::Sym("batch"), D::Fixed(v)],
        ),
    );
    let chars: Vec<String> = vocab.chars().iter().map(|c| c.to_string()).collect();
    let meta = BTreeMap::from([
        ("rnn.charlm.config".to_string(), cfg.to_json()),
        (
            "rnn.vocab".to_string(),
            serde_json::json!({ "chars": chars }).to_string(),
        ),
    ]);
    write_model(path.as_ref(), &b.finish("CharLM", meta))
}

/// The recurrent part of a character model, as a stand-alone stack with the same weights.
fn rnn_of(model: &CharLm) -> Result<Recurrent> {
    let config = model.config().recurrent();
    expressible(&config)?;
    let stack = Recurrent::new(config)?;
    let params: BTreeMap<String, crate::io::TensorData> = model
        .named_parameters()
        .into_iter()
        .filter_map(|(k, t)| {
            k.strip_prefix("rnn.")
                .map(|k| (k.to_string(), crate::io::TensorData::F32(t.to_array())))
        })
        .collect();
    crate::io::load_state_dict(&stack, &params, true)?;
    Ok(stack)
}
