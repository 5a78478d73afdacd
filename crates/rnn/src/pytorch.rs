//! # From PyTorch to rnn
//!
//! Where each PyTorch name a recurrent model uses lives here. The common ones are re-exported
//! at the crate root, so a port imports from one place:
//! `use rnn::{Lstm, Linear, Embedding, LayerNorm, CrossEntropyLoss, Adam, OneCycleLR, Tensor};`.
//!
//! ## Modules
//!
//! | PyTorch | rnn |
//! |---|---|
//! | `nn.RNN`, `nn.LSTM`, `nn.GRU` | [`Rnn`](crate::Rnn), [`Lstm`](crate::Lstm), [`Gru`](crate::Gru) |
//! | `nn.RNNCell`, `nn.LSTMCell`, `nn.GRUCell` | [`RnnCell`](crate::RnnCell), [`LstmCell`](crate::LstmCell), [`GruCell`](crate::GruCell) |
//! | `nn.Linear` | [`Linear`](crate::Linear) |
//! | `nn.Embedding` (`padding_idx`, `max_norm`, `norm_type`) | [`Embedding`](crate::Embedding), [`Embedding::with_max_norm`](crate::Embedding::with_max_norm) |
//! | `nn.Dropout` | [`Dropout`](crate::Dropout) |
//! | `nn.LayerNorm` | [`LayerNorm`](crate::LayerNorm) |
//! | `model.parameters()`, `named_parameters()`, `train()`/`eval()` | [`Module`](crate::Module) |
//!
//! ## Losses
//!
//! | PyTorch | rnn |
//! |---|---|
//! | `nn.CrossEntropyLoss` (class indices / probabilities) | [`CrossEntropyLoss::forward`](crate::CrossEntropyLoss::forward) / [`forward_probs`](crate::CrossEntropyLoss::forward_probs) |
//! | `nn.NLLLoss`, `nn.MSELoss` | [`NLLLoss`](crate::NLLLoss), [`MSELoss`](crate::MSELoss) |
//! | `nn.L1Loss`, `nn.SmoothL1Loss`, `nn.HuberLoss` | [`L1Loss`](crate::L1Loss), [`SmoothL1Loss`](crate::SmoothL1Loss), [`HuberLoss`](crate::HuberLoss) |
//! | `nn.BCELoss`, `nn.BCEWithLogitsLoss` | [`BCELoss`](crate::BCELoss), [`BCEWithLogitsLoss`](crate::BCEWithLogitsLoss) |
//! | `reduction='none' \| 'mean' \| 'sum'` | [`Reduction`](crate::Reduction) |
//! | `F.cross_entropy`, `F.l1_loss`, ... | [`loss::cross_entropy`](crate::loss::cross_entropy), [`loss::l1_loss`](crate::loss::l1_loss), ... |
//!
//! ## Optimizers and schedulers
//!
//! | PyTorch | rnn |
//! |---|---|
//! | `optim.SGD`, `Adam`, `AdamW`, `RMSprop`, `Adagrad` | [`Sgd`](crate::Sgd), [`Adam`](crate::Adam), [`AdamW`](crate::AdamW), [`RMSprop`](crate::RMSprop), [`Adagrad`](crate::Adagrad) |
//! | `optimizer.step()`, `zero_grad()`, `param_groups[g]["lr"]` | [`Optimizer`](crate::Optimizer) |
//! | `optimizer.add_param_group({...})` | [`Optimizer::add_param_group`](crate::Optimizer::add_param_group) with [`ParamGroup`](crate::ParamGroup) |
//! | `optimizer.state_dict()` / `load_state_dict` | [`Optimizer::state_dict`](crate::Optimizer::state_dict) ([`OptimizerState`](crate::optim::OptimizerState)) |
//! | `lr_scheduler.StepLR`, `CosineAnnealingLR`, `ExponentialLR`, `LinearLR`, `LambdaLR`, `SequentialLR`, `OneCycleLR` | [`StepLR`](crate::StepLR), [`CosineAnnealingLR`](crate::CosineAnnealingLR), [`ExponentialLR`](crate::ExponentialLR), [`LinearLR`](crate::LinearLR), [`LambdaLR`](crate::LambdaLR), [`SequentialLR`](crate::SequentialLR), [`OneCycleLR`](crate::OneCycleLR), all [`LrScheduler`](crate::LrScheduler) |
//! | `lr_scheduler.ReduceLROnPlateau` | [`ReduceLROnPlateau`](crate::ReduceLROnPlateau) |
//! | `nn.utils.clip_grad_norm_`, `clip_grad_value_` | [`optim::clip_grad_norm_`](crate::optim::clip_grad_norm_), [`optim::clip_grad_value_`](crate::optim::clip_grad_value_) |
//!
//! ## Tensors and autograd
//!
//! | PyTorch | rnn |
//! |---|---|
//! | `torch.tensor(...)`, `nn.Parameter(...)` | [`Tensor::new`](crate::Tensor::new), [`Tensor::parameter`](crate::Tensor::parameter) |
//! | `a + b`, `a - b`, `a * b`, `a / b`, `-a`, with scalars | `&a + &b`, ... (`std::ops`, panicking on shapes that do not broadcast) or [`Tensor::add`](crate::Tensor::add), ... (a `Result`) |
//! | `t.requires_grad_()`, `t.detach()`, `loss.backward()`, `t.grad` | [`Tensor::requires_grad_`](crate::Tensor::requires_grad_), [`Tensor::detach`](crate::Tensor::detach), [`Tensor::backward`](crate::Tensor::backward), [`Tensor::grad`](crate::Tensor::grad) |
//! | `with torch.no_grad():`, `torch.manual_seed` | [`no_grad`](crate::no_grad), [`manual_seed`](crate::manual_seed) |
//! | `F.one_hot` | [`ops::one_hot`](crate::ops::one_hot) |
//!
//! ## Variable-length batches (`nn.utils.rnn`)
//!
//! | PyTorch | rnn |
//! |---|---|
//! | `PackedSequence` | [`packed::PackedSequence`](crate::packed::PackedSequence) |
//! | `pad_sequence(..., padding_side='right' \| 'left')` | [`packed::pad_sequence`](crate::packed::pad_sequence), [`packed::pad_sequence_with_side`](crate::packed::pad_sequence_with_side) |
//! | `pack_padded_sequence`, `pack_sequence`, `pad_packed_sequence`, `unpad_sequence`, `unpack_sequence` | the same names in [`packed`](crate::packed) |
