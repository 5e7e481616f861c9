//! Checkpoint naming schemes and the mapping of every scheme onto the names
//! our modules ask for (diffusers names for the DiT and the VAE,
//! transformers `Wav2Vec2Model` names for wav2vec2, our own names for the
//! StreamAvatar audio modules).
//!
//! The Wan -> diffusers mapping follows diffusers'
//! `scripts/convert_wan_to_diffusers.py` (`TRANSFORMER_KEYS_RENAME_DICT` and
//! `convert_vae_22`), written out segment by segment instead of substring
//! replaces so no name is renamed twice.

/// What a weights file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    /// Wan2.2 DiT (`WanTransformer3DModel`).
    Transformer,
    /// Wan2.2 VAE (`AutoencoderKLWan`).
    Vae,
    /// wav2vec2 (transformers `Wav2Vec2Model` / `Wav2Vec2ForCTC`).
    Wav2Vec2,
    /// Our `streamavatar_audio.safetensors`: `audio_proj.*`,
    /// `blocks.N.{norm_talk,talk_audio_attn,norm_listen,listen_audio_attn}.*`,
    /// `prompt_embeds`.
    StreamAvatarAudio,
    /// A TAEHV light decoder (madebyollin/taehv, e.g. `taew2_2.safetensors`):
    /// `decoder.{layer index}.*` (its encoder, if present, is not used).
    LightDecoder,
}

impl FileKind {
    pub fn describe(self) -> &'static str {
        match self {
            FileKind::Transformer => "Wan DiT transformer",
            FileKind::Vae => "Wan2.2 VAE",
            FileKind::Wav2Vec2 => "wav2vec2",
            FileKind::StreamAvatarAudio => "StreamAvatar audio modules",
            FileKind::LightDecoder => "light decoder (TAEHV)",
        }
    }
}

/// How tensors are named inside a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameScheme {
    /// diffusers / transformers / our names: used as-is.
    Canonical,
    /// Original Wan2.2 repository names (`wan/modules/model.py`, `vae2_2.py`).
    Wan,
    /// A prefix to strip (`wav2vec2.` of `Wav2Vec2ForCTC`,
    /// `model.diffusion_model.` of ComfyUI-style DiT files).
    Prefixed(&'static str),
}

/// Which file a canonical (model-side) name must come from.
pub fn owner_of(canonical: &str) -> FileKind {
    if canonical == "prompt_embeds" || canonical.starts_with("audio_proj.") {
        return FileKind::StreamAvatarAudio;
    }
    if let Some(rest) = canonical.strip_prefix("blocks.") {
        let mut parts = rest.splitn(3, '.');
        let _idx = parts.next();
        if let Some(module) = parts.next() {
            if matches!(module, "norm_talk" | "talk_audio_attn" | "norm_listen" | "listen_audio_attn") {
                return FileKind::StreamAvatarAudio;
            }
        }
    }
    FileKind::Transformer
}

/// Is `canonical` one of the StreamAvatar additions stored in our audio file?
pub fn is_streamavatar_audio_name(canonical: &str) -> bool {
    owner_of(canonical) == FileKind::StreamAvatarAudio
}

/// `decoder.<digits>.`: TAEHV's `nn.Sequential` decoder (the Wan VAE's
/// decoder names are `decoder.conv_in.`, `decoder.up_blocks.`, ...).
fn is_light_decoder_name(name: &str) -> bool {
    name.strip_prefix("decoder.")
        .and_then(|rest| rest.split('.').next())
        .is_some_and(|idx| !idx.is_empty() && idx.bytes().all(|b| b.is_ascii_digit()))
}

/// Guess kind and scheme of a file from its stored tensor names.
pub fn classify<'a>(names: impl IntoIterator<Item = &'a str> + Clone) -> Option<(FileKind, NameScheme)> {
    let any = |f: &dyn Fn(&str) -> bool| names.clone().into_iter().any(f);
    if any(&|n| {
        n == "prompt_embeds"
            || n.starts_with("audio_proj.")
            || n.contains(".talk_audio_attn.")
            || n.contains(".listen_audio_attn.")
    }) {
        // Our file; an old export may carry them next to the DiT, which is
        // fine: the transformer tensors are then served from it as well.
        if !any(&|n| n.starts_with("patch_embedding.")) {
            return Some((FileKind::StreamAvatarAudio, NameScheme::Canonical));
        }
    }
    if any(&|n| is_light_decoder_name(n)) {
        return Some((FileKind::LightDecoder, NameScheme::Canonical));
    }
    if any(&|n| n.starts_with("wav2vec2.")) {
        return Some((FileKind::Wav2Vec2, NameScheme::Prefixed("wav2vec2.")));
    }
    if any(&|n| n.starts_with("feature_extractor.") || n.starts_with("feature_projection.")) {
        return Some((FileKind::Wav2Vec2, NameScheme::Canonical));
    }
    if any(&|n| {
        n.starts_with("encoder.downsamples.") || n.starts_with("decoder.upsamples.") || n.starts_with("decoder.middle.")
    }) {
        return Some((FileKind::Vae, NameScheme::Wan));
    }
    if any(&|n| {
        n.starts_with("encoder.down_blocks.")
            || n.starts_with("decoder.up_blocks.")
            || n.starts_with("post_quant_conv.")
    }) {
        return Some((FileKind::Vae, NameScheme::Canonical));
    }
    if any(&|n| n.starts_with("model.diffusion_model.")) {
        return Some((FileKind::Transformer, NameScheme::Prefixed("model.diffusion_model.")));
    }
    if any(&|n| n.starts_with("text_embedding.") || n.starts_with("head.head.") || n.contains(".self_attn.")) {
        return Some((FileKind::Transformer, NameScheme::Wan));
    }
    if any(&|n| n.starts_with("condition_embedder.") || n.contains(".attn1.") || n.starts_with("patch_embedding.")) {
        return Some((FileKind::Transformer, NameScheme::Canonical));
    }
    None
}

/// Canonical name of a stored tensor (None: the tensor has no counterpart in
/// our model and is ignored on load, e.g. a CTC head).
pub fn to_canonical(kind: FileKind, scheme: NameScheme, stored: &str) -> String {
    match scheme {
        NameScheme::Canonical => stored.to_string(),
        NameScheme::Prefixed(p) => stored.strip_prefix(p).unwrap_or(stored).to_string(),
        NameScheme::Wan => match kind {
            FileKind::Transformer => wan_dit_to_diffusers(stored),
            FileKind::Vae => wan_vae_to_diffusers(stored),
            _ => stored.to_string(),
        },
    }
}

/// Other canonical spellings a model may ask for, for the same stored tensor
/// (the two ways torch saves wav2vec2's weight-normed positional conv).
pub fn aliases(canonical: &str) -> Vec<String> {
    const PAIRS: [(&str, &str); 2] = [
        ("conv.weight_g", "conv.parametrizations.weight.original0"),
        ("conv.weight_v", "conv.parametrizations.weight.original1"),
    ];
    let mut out = Vec::new();
    for (a, b) in PAIRS {
        if let Some(stem) = canonical.strip_suffix(a) {
            out.push(format!("{stem}{b}"));
        } else if let Some(stem) = canonical.strip_suffix(b) {
            out.push(format!("{stem}{a}"));
        }
    }
    out
}

/// Wan2.2 `WanModel` name -> diffusers `WanTransformer3DModel` name.
pub fn wan_dit_to_diffusers(name: &str) -> String {
    let top = [
        ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
        ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
        ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
        ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
        ("time_projection.1.", "condition_embedder.time_proj."),
        ("head.head.", "proj_out."),
        ("img_emb.proj.0.", "condition_embedder.image_embedder.norm1."),
        ("img_emb.proj.1.", "condition_embedder.image_embedder.ff.net.0.proj."),
        ("img_emb.proj.3.", "condition_embedder.image_embedder.ff.net.2."),
        ("img_emb.proj.4.", "condition_embedder.image_embedder.norm2."),
    ];
    if name == "head.modulation" {
        return "scale_shift_table".into();
    }
    for (from, to) in top {
        if let Some(rest) = name.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    let Some(rest) = name.strip_prefix("blocks.") else {
        return name.to_string();
    };
    let Some((idx, rest)) = rest.split_once('.') else {
        return name.to_string();
    };
    let mapped = if rest == "modulation" {
        "scale_shift_table".to_string()
    } else if let Some(r) = rest.strip_prefix("self_attn.") {
        format!("attn1.{}", wan_attn_part(r))
    } else if let Some(r) = rest.strip_prefix("cross_attn.") {
        format!("attn2.{}", wan_attn_part(r))
    } else if let Some(r) = rest.strip_prefix("norm3.") {
        // Wan applies norm1, norm3 (cross-attn, affine), norm2 (ffn); diffusers
        // numbers them in call order.
        format!("norm2.{r}")
    } else if let Some(r) = rest.strip_prefix("norm2.") {
        format!("norm3.{r}")
    } else if let Some(r) = rest.strip_prefix("ffn.0.") {
        format!("ffn.net.0.proj.{r}")
    } else if let Some(r) = rest.strip_prefix("ffn.2.") {
        format!("ffn.net.2.{r}")
    } else {
        rest.to_string()
    };
    format!("blocks.{idx}.{mapped}")
}

fn wan_attn_part(rest: &str) -> String {
    let Some((module, tail)) = rest.split_once('.') else {
        return rest.to_string();
    };
    let m = match module {
        "q" => "to_q",
        "k" => "to_k",
        "v" => "to_v",
        "o" => "to_out.0",
        "k_img" => "add_k_proj",
        "v_img" => "add_v_proj",
        "norm_k_img" => "norm_added_k",
        other => other,
    };
    format!("{m}.{tail}")
}

/// Wan2.2 `vae2_2.WanVAE_` name -> diffusers `AutoencoderKLWan` name
/// (diffusers `convert_vae_22`).
pub fn wan_vae_to_diffusers(name: &str) -> String {
    match name {
        "conv1.weight" => return "quant_conv.weight".into(),
        "conv1.bias" => return "quant_conv.bias".into(),
        "conv2.weight" => return "post_quant_conv.weight".into(),
        "conv2.bias" => return "post_quant_conv.bias".into(),
        _ => {}
    }
    let Some((side, rest)) = name.split_once('.') else {
        return name.to_string();
    };
    if side != "encoder" && side != "decoder" {
        return name.to_string();
    }
    let parts: Vec<&str> = rest.split('.').collect();
    let mapped: String = match parts.as_slice() {
        ["conv1", p] => format!("conv_in.{p}"),
        ["head", "0", p] => format!("norm_out.{p}"),
        ["head", "2", p] => format!("conv_out.{p}"),
        ["middle", "1", tail @ ..] => format!("mid_block.attentions.0.{}", tail.join(".")),
        ["middle", i @ ("0" | "2"), tail @ ..] => {
            let r = if *i == "0" { 0 } else { 1 };
            format!("mid_block.resnets.{r}.{}", wan_residual_part(tail))
        }
        [group @ ("downsamples" | "upsamples"), block, inner, j, tail @ ..] if inner == group => {
            let blocks = if *group == "downsamples" { "down_blocks" } else { "up_blocks" };
            let sampler = if *group == "downsamples" { "downsampler" } else { "upsampler" };
            match tail.first() {
                Some(&"residual") | Some(&"shortcut") => {
                    format!("{blocks}.{block}.resnets.{j}.{}", wan_residual_part(tail))
                }
                _ => format!("{blocks}.{block}.{sampler}.{}", tail.join(".")),
            }
        }
        _ => rest.to_string(),
    };
    format!("{side}.{mapped}")
}

fn wan_residual_part(tail: &[&str]) -> String {
    match tail {
        ["residual", "0", p] => format!("norm1.{p}"),
        ["residual", "2", p] => format!("conv1.{p}"),
        ["residual", "3", p] => format!("norm2.{p}"),
        ["residual", "6", p] => format!("conv2.{p}"),
        ["shortcut", p] => format!("conv_shortcut.{p}"),
        other => other.join("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wan_dit_names_map_to_diffusers() {
        let cases = [
            ("patch_embedding.weight", "patch_embedding.weight"),
            ("text_embedding.0.weight", "condition_embedder.text_embedder.linear_1.weight"),
            ("text_embedding.2.bias", "condition_embedder.text_embedder.linear_2.bias"),
            ("time_embedding.0.weight", "condition_embedder.time_embedder.linear_1.weight"),
            ("time_embedding.2.weight", "condition_embedder.time_embedder.linear_2.weight"),
            ("time_projection.1.weight", "condition_embedder.time_proj.weight"),
            ("head.head.weight", "proj_out.weight"),
            ("head.modulation", "scale_shift_table"),
            ("blocks.7.modulation", "blocks.7.scale_shift_table"),
            ("blocks.0.self_attn.q.weight", "blocks.0.attn1.to_q.weight"),
            ("blocks.0.self_attn.o.bias", "blocks.0.attn1.to_out.0.bias"),
            ("blocks.0.self_attn.norm_q.weight", "blocks.0.attn1.norm_q.weight"),
            ("blocks.3.cross_attn.k.weight", "blocks.3.attn2.to_k.weight"),
            ("blocks.3.cross_attn.norm_k.weight", "blocks.3.attn2.norm_k.weight"),
            ("blocks.29.norm3.weight", "blocks.29.norm2.weight"),
            ("blocks.29.norm3.bias", "blocks.29.norm2.bias"),
            ("blocks.1.ffn.0.weight", "blocks.1.ffn.net.0.proj.weight"),
            ("blocks.1.ffn.2.bias", "blocks.1.ffn.net.2.bias"),
            // StreamAvatar additions keep their names in either scheme.
            ("blocks.1.talk_audio_attn.to_q.weight", "blocks.1.talk_audio_attn.to_q.weight"),
        ];
        for (wan, diff) in cases {
            assert_eq!(wan_dit_to_diffusers(wan), diff, "{wan}");
        }
    }

    #[test]
    fn wan_vae_names_map_to_diffusers() {
        let cases = [
            ("conv1.weight", "quant_conv.weight"),
            ("conv2.bias", "post_quant_conv.bias"),
            ("encoder.conv1.weight", "encoder.conv_in.weight"),
            ("decoder.conv1.bias", "decoder.conv_in.bias"),
            ("encoder.head.0.gamma", "encoder.norm_out.gamma"),
            ("decoder.head.2.weight", "decoder.conv_out.weight"),
            ("encoder.middle.0.residual.0.gamma", "encoder.mid_block.resnets.0.norm1.gamma"),
            ("encoder.middle.2.residual.6.weight", "encoder.mid_block.resnets.1.conv2.weight"),
            ("decoder.middle.1.to_qkv.weight", "decoder.mid_block.attentions.0.to_qkv.weight"),
            ("decoder.middle.1.norm.gamma", "decoder.mid_block.attentions.0.norm.gamma"),
            ("encoder.downsamples.1.downsamples.0.residual.3.gamma", "encoder.down_blocks.1.resnets.0.norm2.gamma"),
            (
                "encoder.downsamples.1.downsamples.0.shortcut.weight",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "encoder.downsamples.0.downsamples.2.resample.1.weight",
                "encoder.down_blocks.0.downsampler.resample.1.weight",
            ),
            ("encoder.downsamples.1.downsamples.2.time_conv.bias", "encoder.down_blocks.1.downsampler.time_conv.bias"),
            ("decoder.upsamples.0.upsamples.2.residual.2.weight", "decoder.up_blocks.0.resnets.2.conv1.weight"),
            ("decoder.upsamples.2.upsamples.3.time_conv.weight", "decoder.up_blocks.2.upsampler.time_conv.weight"),
            ("decoder.upsamples.1.upsamples.3.resample.1.bias", "decoder.up_blocks.1.upsampler.resample.1.bias"),
        ];
        for (wan, diff) in cases {
            assert_eq!(wan_vae_to_diffusers(wan), diff, "{wan}");
        }
    }

    #[test]
    fn classify_detects_kind_and_scheme() {
        let c = |names: &[&str]| classify(names.iter().copied());
        assert_eq!(
            c(&["patch_embedding.weight", "blocks.0.self_attn.q.weight"]),
            Some((FileKind::Transformer, NameScheme::Wan))
        );
        assert_eq!(
            c(&["patch_embedding.weight", "blocks.0.attn1.to_q.weight"]),
            Some((FileKind::Transformer, NameScheme::Canonical))
        );
        assert_eq!(
            c(&["encoder.downsamples.0.downsamples.0.residual.0.gamma"]),
            Some((FileKind::Vae, NameScheme::Wan))
        );
        assert_eq!(c(&["encoder.down_blocks.0.resnets.0.norm1.gamma"]), Some((FileKind::Vae, NameScheme::Canonical)));
        assert_eq!(
            c(&["wav2vec2.feature_extractor.conv_layers.0.conv.weight", "lm_head.weight"]),
            Some((FileKind::Wav2Vec2, NameScheme::Prefixed("wav2vec2.")))
        );
        assert_eq!(
            c(&["feature_extractor.conv_layers.0.conv.weight"]),
            Some((FileKind::Wav2Vec2, NameScheme::Canonical))
        );
        assert_eq!(
            c(&["prompt_embeds", "blocks.0.norm_talk.weight"]),
            Some((FileKind::StreamAvatarAudio, NameScheme::Canonical))
        );
        assert_eq!(
            c(&["encoder.0.weight", "decoder.1.weight", "decoder.3.conv.0.weight"]),
            Some((FileKind::LightDecoder, NameScheme::Canonical))
        );
        assert_eq!(
            c(&["decoder.conv_in.weight", "decoder.up_blocks.0.resnets.0.conv1.weight"]).unwrap().0,
            FileKind::Vae
        );
        assert_eq!(c(&["something.else"]), None);
    }

    #[test]
    fn owner_separates_streamavatar_modules() {
        assert_eq!(owner_of("blocks.3.talk_audio_attn.to_q.weight"), FileKind::StreamAvatarAudio);
        assert_eq!(owner_of("blocks.3.norm_listen.weight"), FileKind::StreamAvatarAudio);
        assert_eq!(owner_of("audio_proj.proj1.weight"), FileKind::StreamAvatarAudio);
        assert_eq!(owner_of("prompt_embeds"), FileKind::StreamAvatarAudio);
        assert_eq!(owner_of("blocks.3.attn1.to_q.weight"), FileKind::Transformer);
    }

    #[test]
    fn wav2vec2_weight_norm_aliases() {
        assert_eq!(
            aliases("encoder.pos_conv_embed.conv.weight_g"),
            vec!["encoder.pos_conv_embed.conv.parametrizations.weight.original0".to_string()]
        );
        assert!(aliases("encoder.layers.0.attention.q_proj.weight").is_empty());
    }
}
