//! wav2vec 2.0 encoder (transformers `Wav2Vec2Model`, inference only) in
//! candle: the convolutional feature encoder, the feature projection, the
//! weight-normalised grouped positional convolution and the transformer
//! encoder, in both published layouts:
//!
//! * `feat_extract_norm = "group"`, post-LN encoder (wav2vec2-base): GroupNorm
//!   (one group per channel, i.e. per-channel normalisation over time) after
//!   the first conv only; LayerNorm after the positional embedding; each layer
//!   is `x = LN(x + attn(x)); x = LN(x + ffn(x))`.
//! * `feat_extract_norm = "layer"`, `do_stable_layer_norm` (wav2vec2-large-lv60):
//!   LayerNorm over channels after every conv; pre-LN layers
//!   `x = x + attn(LN(x)); x = x + ffn(LN(x))`; encoder LayerNorm at the end.
//!
//! Tensor names are the transformers checkpoint names (`feature_extractor.*`,
//! `feature_projection.*`, `encoder.*`); the positional conv weight is read
//! from `weight_g`/`weight_v` (older checkpoints),
//! `parametrizations.weight.original0/1` (torch parametrizations) or a plain
//! `weight` (weight norm already folded).
//!
//! Activations are exact (erf) GELU, as in every published wav2vec2
//! checkpoint (`feat_extract_activation = hidden_act = "gelu"`).
//!
//! Hidden states follow transformers 5.x `output_hidden_states=True`: entry 0
//! is the encoder input (after the positional embedding, and after the
//! encoder LayerNorm for the post-LN layout), entry i is the output of layer
//! i. For the stable-layer-norm layout the last entry is the last layer's
//! output *before* the final encoder LayerNorm (transformers 4.x appended it
//! after); `last_hidden_state` is after it.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use super::stream_stats::StreamNormStats;
use super::AudioError;
use crate::config::Wav2Vec2Config;

/// `eps` of the LayerNorm/GroupNorm inside the conv feature encoder
/// (torch defaults; transformers does not pass `layer_norm_eps` there).
const CONV_NORM_EPS: f64 = 1e-5;
/// `eps` of the feature extractor's zero-mean unit-variance normalisation.
const NORMALIZE_EPS: f64 = 1e-7;

/// How the raw waveform is prepared before the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputNormalization {
    /// Feed the waveform as is.
    None,
    /// `Wav2Vec2FeatureExtractor(do_normalize=True)`: per item,
    /// `(x - mean) / sqrt(var + 1e-7)` over the whole input. Both published
    /// checkpoints (base-960h, large-960h-lv60-self) were trained with it.
    #[default]
    ZeroMeanUnitVariance,
}

/// Zero-mean unit-variance normalisation of each row of a [B, S] waveform
/// (transformers `Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm`).
pub fn zero_mean_unit_var_norm(waveform: &Tensor) -> Result<Tensor, AudioError> {
    let x = waveform.to_dtype(DType::F32)?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let std = (var + NORMALIZE_EPS)?.sqrt()?;
    Ok(centered.broadcast_div(&std)?.to_dtype(waveform.dtype())?)
}

/// Output of [`Wav2Vec2Model::forward`].
#[derive(Debug, Clone)]
pub struct Wav2Vec2Output {
    /// All hidden states stacked: [B, L+1, T, H] (T at 50 Hz for 16 kHz input).
    pub hidden_states: Tensor,
    /// Final encoder output [B, T, H] (after the final LayerNorm in the
    /// stable-layer-norm layout; equal to the last hidden state otherwise).
    pub last_hidden_state: Tensor,
}

/// A LayerNorm that keeps its `eps`, so that with gradients tracked
/// (the audio encoder stage) it takes the differentiable path of
/// [`crate::model::grad_ops`] instead of candle's fused kernel.
#[derive(Clone)]
struct Norm {
    ln: candle_nn::LayerNorm,
    eps: f64,
}

impl Norm {
    fn new(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self { ln: candle_nn::layer_norm(size, eps, vb)?, eps })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::model::grad_ops::layer_norm_module(&self.ln, x, self.eps)
    }
}

#[derive(Clone)]
enum ConvNorm {
    None,
    /// GroupNorm with one group per channel: each channel normalised over
    /// time. (weight, bias) of shape [C].
    Group(Tensor, Tensor),
    /// LayerNorm over channels of a [B, C, T] tensor.
    Layer(Norm),
}

#[derive(Clone)]
struct ConvLayer {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    norm: ConvNorm,
}

impl ConvLayer {
    /// Convolution (+ bias) before the norm: [B, C_in, S] -> [B, C, T].
    fn conv(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = x.conv1d(&self.weight, 0, self.stride, 1, 1)?;
        match &self.bias {
            Some(b) => h.broadcast_add(&b.reshape((1, (), 1))?),
            None => Ok(h),
        }
    }

    /// `group_stats`: per-item per-channel (mean, var) [B, C, 1] to use in
    /// the GroupNorm instead of the input's own statistics.
    fn forward(&self, x: &Tensor, group_stats: Option<&(Tensor, Tensor)>) -> candle_core::Result<Tensor> {
        let h = self.conv(x)?;
        let h = match &self.norm {
            ConvNorm::None => h,
            ConvNorm::Group(w, b) => {
                // Statistics and normalisation in f32 whatever the weights' dtype.
                let dtype = h.dtype();
                let hf = h.to_dtype(DType::F32)?;
                let (mean, var) = match group_stats {
                    Some((m, v)) => (m.to_dtype(DType::F32)?, v.to_dtype(DType::F32)?),
                    None => {
                        let mean = hf.mean_keepdim(2)?;
                        let var = hf.broadcast_sub(&mean)?.sqr()?.mean_keepdim(2)?;
                        (mean, var)
                    }
                };
                let normed =
                    hf.broadcast_sub(&mean)?.broadcast_div(&(var + CONV_NORM_EPS)?.sqrt()?)?.to_dtype(dtype)?;
                normed.broadcast_mul(&w.reshape((1, (), 1))?)?.broadcast_add(&b.reshape((1, (), 1))?)?
            }
            ConvNorm::Layer(ln) => ln.forward(&h.transpose(1, 2)?.contiguous()?)?.transpose(1, 2)?,
        };
        h.gelu_erf()
    }
}

/// Grouped "same" convolution with weight norm over the kernel axis (dim=2).
#[derive(Clone)]
struct PositionalConvEmbedding {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    groups: usize,
    /// Even kernels produce one frame too many (transformers `SamePadLayer`).
    remove_last: bool,
}

impl PositionalConvEmbedding {
    fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self, AudioError> {
        let h = cfg.hidden_size;
        let k = cfg.num_conv_pos_embeddings;
        let groups = cfg.num_conv_pos_embedding_groups;
        if groups == 0 || h % groups != 0 {
            return Err(AudioError::Config(format!(
                "num_conv_pos_embedding_groups ({groups}) must divide hidden_size ({h})"
            )));
        }
        let shape = (h, h / groups, k);
        let weight = if vb.contains_tensor("weight_g") {
            weight_norm(&vb.get((1, 1, k), "weight_g")?, &vb.get(shape, "weight_v")?)?
        } else if vb.contains_tensor("parametrizations.weight.original0") {
            weight_norm(
                &vb.get((1, 1, k), "parametrizations.weight.original0")?,
                &vb.get(shape, "parametrizations.weight.original1")?,
            )?
        } else {
            vb.get_with_hints(shape, "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?
        };
        Ok(Self { weight, bias: vb.get(h, "bias")?, padding: k / 2, groups, remove_last: k % 2 == 0 })
    }

    /// [B, T, H] -> [B, T, H]
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let t = x.dim(1)?;
        let h = x.transpose(1, 2)?.contiguous()?;
        let h = h.conv1d(&self.weight, self.padding, 1, 1, self.groups)?;
        let h = h.broadcast_add(&self.bias.reshape((1, (), 1))?)?;
        let h = if self.remove_last { h.narrow(2, 0, t)? } else { h };
        h.gelu_erf()?.transpose(1, 2)
    }
}

/// `torch._weight_norm(v, g, dim=2)`: `w = g * v / ||v||`, the norm taken
/// over every axis except the kernel axis.
fn weight_norm(g: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    let norm = v.sqr()?.sum_keepdim(0)?.sum_keepdim(1)?.sqrt()?;
    v.broadcast_mul(&g.broadcast_div(&norm)?)
}

#[derive(Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self, AudioError> {
        let h = cfg.hidden_size;
        if cfg.num_attention_heads == 0 || h % cfg.num_attention_heads != 0 {
            return Err(AudioError::Config(format!(
                "hidden_size ({h}) must divide by num_attention_heads ({})",
                cfg.num_attention_heads
            )));
        }
        Ok(Self {
            q_proj: candle_nn::linear(h, h, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear(h, h, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear(h, h, vb.pp("v_proj"))?,
            out_proj: candle_nn::linear(h, h, vb.pp("out_proj"))?,
            num_heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let split = |y: Tensor| -> candle_core::Result<Tensor> {
            y.reshape((b, t, self.num_heads, self.head_dim))?.transpose(1, 2)?.contiguous()
        };
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = split((self.q_proj.forward(x)? * scale)?)?;
        let k = split(self.k_proj.forward(x)?)?;
        let v = split(self.v_proj.forward(x)?)?;
        let attn = crate::model::grad_ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
        self.out_proj.forward(&out)
    }
}

#[derive(Clone)]
struct EncoderLayer {
    attention: Attention,
    layer_norm: Norm,
    intermediate_dense: Linear,
    output_dense: Linear,
    final_layer_norm: Norm,
    pre_ln: bool,
}

impl EncoderLayer {
    fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self, AudioError> {
        let h = cfg.hidden_size;
        let ff = vb.pp("feed_forward");
        Ok(Self {
            attention: Attention::new(cfg, vb.pp("attention"))?,
            layer_norm: Norm::new(h, cfg.layer_norm_eps, vb.pp("layer_norm"))?,
            intermediate_dense: candle_nn::linear(h, cfg.intermediate_size, ff.pp("intermediate_dense"))?,
            output_dense: candle_nn::linear(cfg.intermediate_size, h, ff.pp("output_dense"))?,
            final_layer_norm: Norm::new(h, cfg.layer_norm_eps, vb.pp("final_layer_norm"))?,
            pre_ln: cfg.do_stable_layer_norm,
        })
    }

    fn feed_forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.output_dense.forward(&self.intermediate_dense.forward(x)?.gelu_erf()?)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.pre_ln {
            let x = (x + self.attention.forward(&self.layer_norm.forward(x)?)?)?;
            &x + self.feed_forward(&self.final_layer_norm.forward(&x)?)?
        } else {
            let x = self.layer_norm.forward(&(x + self.attention.forward(x)?)?)?;
            self.final_layer_norm.forward(&(&x + self.feed_forward(&x)?)?)
        }
    }
}

/// transformers `Wav2Vec2Model` (no SpecAugment, no adapter, no padding mask:
/// every item of a batch has the same length). Cheap to clone (tensors are
/// shared).
#[derive(Clone)]
pub struct Wav2Vec2Model {
    cfg: Wav2Vec2Config,
    device: candle_core::Device,
    /// The weights' dtype; inputs are cast to it after normalisation.
    dtype: DType,
    conv_layers: Vec<ConvLayer>,
    projection_norm: Norm,
    projection: Linear,
    pos_conv: PositionalConvEmbedding,
    encoder_layer_norm: Norm,
    layers: Vec<EncoderLayer>,
    normalization: InputNormalization,
}

impl Wav2Vec2Model {
    /// Build from a `VarBuilder` rooted at the `Wav2Vec2Model` (tensor names
    /// `feature_extractor.*`, `feature_projection.*`, `encoder.*`). For a
    /// `Wav2Vec2ForCTC` checkpoint pass `vb.pp("wav2vec2")`.
    pub fn new(cfg: &Wav2Vec2Config, normalization: InputNormalization, vb: VarBuilder) -> Result<Self, AudioError> {
        validate(cfg)?;
        let fe = vb.pp("feature_extractor").pp("conv_layers");
        let mut conv_layers = Vec::with_capacity(cfg.conv_dim.len());
        for (i, &c_out) in cfg.conv_dim.iter().enumerate() {
            let c_in = if i == 0 { 1 } else { cfg.conv_dim[i - 1] };
            let k = cfg.conv_kernel[i];
            let vb_l = fe.pp(i);
            // Kaiming init only matters for a fresh VarMap (random-weight models).
            let weight =
                vb_l.pp("conv").get_with_hints((c_out, c_in, k), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
            let bias = if cfg.conv_bias { Some(vb_l.pp("conv").get(c_out, "bias")?) } else { None };
            let norm = match (cfg.feat_extract_norm.as_str(), i) {
                ("group", 0) => {
                    let gn = vb_l.pp("layer_norm");
                    ConvNorm::Group(
                        gn.get_with_hints(c_out, "weight", candle_nn::Init::Const(1.0))?,
                        gn.get_with_hints(c_out, "bias", candle_nn::Init::Const(0.0))?,
                    )
                }
                ("group", _) => ConvNorm::None,
                _ => ConvNorm::Layer(Norm::new(c_out, CONV_NORM_EPS, vb_l.pp("layer_norm"))?),
            };
            conv_layers.push(ConvLayer { weight, bias, stride: cfg.conv_stride[i], norm });
        }
        let c_last = *cfg.conv_dim.last().unwrap_or(&0);
        let fp = vb.pp("feature_projection");
        let enc = vb.pp("encoder");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(cfg, enc.pp("layers").pp(i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
            conv_layers,
            projection_norm: Norm::new(c_last, cfg.layer_norm_eps, fp.pp("layer_norm"))?,
            projection: candle_nn::linear(c_last, cfg.hidden_size, fp.pp("projection"))?,
            pos_conv: PositionalConvEmbedding::new(cfg, enc.pp("pos_conv_embed").pp("conv"))?,
            encoder_layer_norm: Norm::new(cfg.hidden_size, cfg.layer_norm_eps, enc.pp("layer_norm"))?,
            layers,
            normalization,
        })
    }

    pub fn config(&self) -> &Wav2Vec2Config {
        &self.cfg
    }

    pub fn device(&self) -> &candle_core::Device {
        &self.device
    }

    pub fn normalization(&self) -> InputNormalization {
        self.normalization
    }

    /// Number of feature frames for `samples` input samples (0 when too short).
    pub fn num_frames(&self, samples: usize) -> usize {
        conv_output_frames(&self.cfg, samples)
    }

    /// Raw waveform [B, S] (16 kHz) -> all hidden states [B, L+1, T, H].
    /// Applies the model's [`InputNormalization`] first; every normalisation
    /// uses the statistics of this input (transformers behaviour).
    pub fn forward(&self, waveform: &Tensor) -> Result<Wav2Vec2Output, AudioError> {
        self.check_input(waveform)?;
        let x = match self.normalization {
            InputNormalization::None => waveform.clone(),
            InputNormalization::ZeroMeanUnitVariance => zero_mean_unit_var_norm(waveform)?,
        };
        self.encode(&x.to_dtype(self.dtype)?, None)
    }

    /// Forward for a window of a stream: row b of `waveform` [B, S] is the
    /// window of stream b starting at global sample `window_start` (a
    /// multiple of the first conv's stride). The input normalisation and the
    /// first conv's GroupNorm use the running statistics in `stats[b]`,
    /// first updated with the samples / conv frames of this window not
    /// counted before (see [`super::stream_stats`]).
    pub fn forward_streaming(
        &self,
        waveform: &Tensor,
        window_start: u64,
        stats: &mut [StreamNormStats],
    ) -> Result<Wav2Vec2Output, AudioError> {
        let (b, s) = self.check_input(waveform)?;
        if stats.len() != b {
            return Err(AudioError::BadInput(format!("{} stream statistics for a batch of {b}", stats.len())));
        }
        let stride0 = self.cfg.conv_stride[0] as u64;
        if window_start % stride0 != 0 {
            return Err(AudioError::BadInput(format!(
                "window start {window_start} is not a multiple of the first conv stride {stride0}"
            )));
        }
        let end = window_start + s as u64;
        // 1. waveform moments of the new samples.
        let rows = waveform.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for (row, st) in rows.iter().zip(stats.iter_mut()) {
            let from = st.samples_counted.max(window_start);
            if from < end {
                let new = &row[(from - window_start) as usize..];
                let sum: f64 = new.iter().map(|v| *v as f64).sum();
                let sum_sq: f64 = new.iter().map(|v| (*v as f64) * (*v as f64)).sum();
                st.samples.add(new.len() as f64, sum, sum_sq);
                st.samples_counted = end;
            }
        }
        let x = match self.normalization {
            InputNormalization::None => waveform.clone(),
            InputNormalization::ZeroMeanUnitVariance => {
                let (mut means, mut stds) = (Vec::with_capacity(b), Vec::with_capacity(b));
                for st in stats.iter() {
                    let (m, v) = st.samples.mean_var();
                    means.push(m as f32);
                    stds.push((v + NORMALIZE_EPS).sqrt() as f32);
                }
                let dev = waveform.device();
                let m = Tensor::from_vec(means, (b, 1), dev)?.to_dtype(waveform.dtype())?;
                let sd = Tensor::from_vec(stds, (b, 1), dev)?.to_dtype(waveform.dtype())?;
                waveform.broadcast_sub(&m)?.broadcast_div(&sd)?
            }
        };
        // Normalised in the input's dtype (f32 PCM), then run in the weights'.
        let x = x.to_dtype(self.dtype)?;
        // 2. per-channel moments of the new first-conv frames (GroupNorm layout only).
        let group_stats = match self.conv_layers.first().map(|c| &c.norm) {
            Some(ConvNorm::Group(..)) => {
                let h0 = self.conv_layers[0].conv(&x.unsqueeze(1)?)?.to_dtype(DType::F32)?;
                let (_, c, t0) = h0.dims3()?;
                let first_global = window_start / stride0;
                let mut means = Vec::with_capacity(b * c);
                let mut vars = Vec::with_capacity(b * c);
                for (i, st) in stats.iter_mut().enumerate() {
                    let from = st.conv0_counted.max(first_global);
                    let last = first_global + t0 as u64;
                    if st.conv0.len() != c {
                        st.conv0 = vec![Default::default(); c];
                    }
                    if from < last {
                        let new = h0.get(i)?.narrow(1, (from - first_global) as usize, (last - from) as usize)?;
                        let sums = new.sum(1)?.to_vec1::<f32>()?;
                        let sqs = new.sqr()?.sum(1)?.to_vec1::<f32>()?;
                        for ((m, s1), s2) in st.conv0.iter_mut().zip(sums).zip(sqs) {
                            m.add((last - from) as f64, s1 as f64, s2 as f64);
                        }
                        st.conv0_counted = last;
                    }
                    for m in &st.conv0 {
                        let (mean, var) = m.mean_var();
                        means.push(mean as f32);
                        vars.push(var as f32);
                    }
                }
                let dev = waveform.device();
                Some((Tensor::from_vec(means, (b, c, 1), dev)?, Tensor::from_vec(vars, (b, c, 1), dev)?))
            }
            _ => None,
        };
        self.encode(&x, group_stats.as_ref())
    }

    fn check_input(&self, waveform: &Tensor) -> Result<(usize, usize), AudioError> {
        let (b, s) = waveform.dims2().map_err(|_| {
            AudioError::BadInput(format!("wav2vec2 expects a [batch, samples] waveform, got {:?}", waveform.dims()))
        })?;
        if self.num_frames(s) == 0 {
            return Err(AudioError::BadInput(format!(
                "waveform of {s} samples is shorter than the wav2vec2 receptive field ({} samples)",
                receptive_field(&self.cfg)
            )));
        }
        Ok((b, s))
    }

    /// Everything after the input normalisation.
    fn encode(&self, x: &Tensor, group_stats: Option<&(Tensor, Tensor)>) -> Result<Wav2Vec2Output, AudioError> {
        let mut h = x.unsqueeze(1)?;
        for (i, conv) in self.conv_layers.iter().enumerate() {
            h = conv.forward(&h, if i == 0 { group_stats } else { None })?;
        }
        let h = h.transpose(1, 2)?.contiguous()?;
        let h = self.projection.forward(&self.projection_norm.forward(&h)?)?;
        let mut h = (&h + self.pos_conv.forward(&h)?)?;
        if !self.cfg.do_stable_layer_norm {
            h = self.encoder_layer_norm.forward(&h)?;
        }
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        states.push(h.clone());
        for layer in &self.layers {
            h = layer.forward(&h)?;
            states.push(h.clone());
        }
        let last_hidden_state = if self.cfg.do_stable_layer_norm { self.encoder_layer_norm.forward(&h)? } else { h };
        Ok(Wav2Vec2Output { hidden_states: Tensor::stack(&states, 1)?, last_hidden_state })
    }
}

fn validate(cfg: &Wav2Vec2Config) -> Result<(), AudioError> {
    let n = cfg.conv_dim.len();
    if n == 0 || cfg.conv_stride.len() != n || cfg.conv_kernel.len() != n {
        return Err(AudioError::Config(format!(
            "conv_dim/conv_stride/conv_kernel must be non-empty and equally long (got {}, {}, {})",
            n,
            cfg.conv_stride.len(),
            cfg.conv_kernel.len()
        )));
    }
    if cfg.conv_stride.contains(&0) || cfg.conv_kernel.contains(&0) {
        return Err(AudioError::Config("conv strides and kernels must be >= 1".into()));
    }
    if cfg.feat_extract_norm != "group" && cfg.feat_extract_norm != "layer" {
        return Err(AudioError::Config(format!(
            "feat_extract_norm is `{}`, expected `group` or `layer`",
            cfg.feat_extract_norm
        )));
    }
    Ok(())
}

/// Output length of the conv feature encoder (no padding): for each layer
/// `floor((len - kernel) / stride) + 1`.
pub fn conv_output_frames(cfg: &Wav2Vec2Config, samples: usize) -> usize {
    let mut len = samples;
    for (&k, &s) in cfg.conv_kernel.iter().zip(&cfg.conv_stride) {
        if len < k || s == 0 {
            return 0;
        }
        len = (len - k) / s + 1;
    }
    len
}

/// Input samples seen by one feature frame (400 for the published configs).
pub fn receptive_field(cfg: &Wav2Vec2Config) -> usize {
    let mut rf = 1;
    let mut jump = 1;
    for (&k, &s) in cfg.conv_kernel.iter().zip(&cfg.conv_stride) {
        rf += (k.saturating_sub(1)) * jump;
        jump *= s;
    }
    rf
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn frame_geometry_of_published_configs() {
        let cfg = Wav2Vec2Config::base();
        assert_eq!(receptive_field(&cfg), 400);
        assert_eq!(cfg.hop(), 320);
        // transformers: 1 s at 16 kHz -> 49 frames.
        assert_eq!(conv_output_frames(&cfg, 16_000), 49);
        assert_eq!(conv_output_frames(&cfg, 399), 0);
        assert_eq!(conv_output_frames(&cfg, 400), 1);
    }

    #[test]
    fn zero_mean_unit_variance() -> anyhow::Result<()> {
        let x = Tensor::new(&[[1f32, 2., 3., 4.], [0., 0., 0., 0.]], &Device::Cpu)?;
        let y = zero_mean_unit_var_norm(&x)?.to_vec2::<f32>()?;
        let m: f32 = y[0].iter().sum::<f32>() / 4.0;
        let v: f32 = y[0].iter().map(|a| (a - m) * (a - m)).sum::<f32>() / 4.0;
        assert!(m.abs() < 1e-6 && (v - 1.0).abs() < 1e-5, "mean {m} var {v}");
        assert!(y[1].iter().all(|a| *a == 0.0), "silence stays zero");
        Ok(())
    }

    /// bf16 weights take f32 PCM (the GPU path: the generator always feeds
    /// f32 samples) in both the whole-clip and the streaming forward.
    #[test]
    fn half_precision_weights_take_f32_pcm() -> anyhow::Result<()> {
        let cfg = Wav2Vec2Config::tiny();
        let vb = crate::model::weights::SeededInitBackend::var_builder(3, DType::BF16, &Device::Cpu);
        let model = Wav2Vec2Model::new(&cfg, InputNormalization::ZeroMeanUnitVariance, vb)?;
        let pcm: Vec<f32> = (0..4000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let x = Tensor::from_vec(pcm, (1, 4000), &Device::Cpu)?;
        let whole = model.forward(&x)?.hidden_states;
        assert_eq!(whole.dtype(), DType::BF16);
        let mut stats = vec![StreamNormStats::default()];
        let streamed = model.forward_streaming(&x, 0, &mut stats)?.hidden_states;
        assert_eq!(streamed.dims(), whole.dims());
        let v = streamed.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(v.iter().all(|a| a.is_finite()));
        Ok(())
    }

    #[test]
    fn too_short_input_is_an_error() -> anyhow::Result<()> {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let model = Wav2Vec2Model::new(&Wav2Vec2Config::tiny(), InputNormalization::None, vb)?;
        let x = Tensor::zeros((1, 100), DType::F32, &Device::Cpu)?;
        assert!(matches!(model.forward(&x), Err(AudioError::BadInput(_))));
        Ok(())
    }
}
