//! Weight loading and `weights check` on small safetensors files written
//! with candle: both naming schemes, clear errors for corrupt/truncated
//! files, missing tensors, wrong shapes and unsupported dtypes, and the
//! missing/unexpected/mismatch report.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use streamavatar::model::weights::{
    load_prompt_embeds, Component, ExpectedTensors, FileKind, ModelWeights, NameScheme, RecordingBackend, WeightsError,
};

fn write(dir: &Path, name: &str, tensors: &[(&str, Tensor)]) -> PathBuf {
    let map: HashMap<String, Tensor> = tensors.iter().map(|(n, t)| (n.to_string(), t.clone())).collect();
    let path = dir.join(name);
    candle_core::safetensors::save(&map, &path).unwrap();
    path
}

fn arange(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::arange(0f32, n as f32, &Device::Cpu).unwrap().reshape(shape).unwrap()
}

/// A tiny "DiT" in original Wan names: one block.
fn wan_dit(dir: &Path) -> PathBuf {
    write(
        dir,
        "wan_dit.safetensors",
        &[
            ("patch_embedding.weight", arange(&[4, 2, 1, 2, 2])),
            ("text_embedding.0.weight", arange(&[4, 3])),
            ("blocks.0.self_attn.q.weight", arange(&[4, 4])),
            ("blocks.0.self_attn.o.weight", arange(&[4, 4])),
            ("blocks.0.norm3.weight", arange(&[4])),
            ("blocks.0.ffn.0.weight", arange(&[8, 4])),
            ("blocks.0.modulation", arange(&[1, 6, 4])),
            ("head.head.weight", arange(&[8, 4])),
            ("head.modulation", arange(&[1, 2, 4])),
        ],
    )
}

#[test]
fn wan_and_diffusers_names_load_the_same_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let wan = wan_dit(dir.path());
    let diff = write(
        dir.path(),
        "diffusers_dit.safetensors",
        &[
            ("patch_embedding.weight", arange(&[4, 2, 1, 2, 2])),
            ("condition_embedder.text_embedder.linear_1.weight", arange(&[4, 3])),
            ("blocks.0.attn1.to_q.weight", arange(&[4, 4])),
            ("blocks.0.attn1.to_out.0.weight", arange(&[4, 4])),
            ("blocks.0.norm2.weight", arange(&[4])),
            ("blocks.0.ffn.net.0.proj.weight", arange(&[8, 4])),
            ("blocks.0.scale_shift_table", arange(&[1, 6, 4])),
            ("proj_out.weight", arange(&[8, 4])),
            ("scale_shift_table", arange(&[1, 2, 4])),
        ],
    );
    let dev = Device::Cpu;
    let w1 = ModelWeights::open(&[&wan]).unwrap();
    let w2 = ModelWeights::open(&[&diff]).unwrap();
    assert_eq!(w1.files()[0].kind, FileKind::Transformer);
    assert_eq!(w1.files()[0].scheme, NameScheme::Wan);
    assert_eq!(w2.files()[0].scheme, NameScheme::Canonical);
    let (a, b) = (w1.dit_vb(DType::F32, &dev), w2.dit_vb(DType::F32, &dev));
    for (name, shape) in [
        ("blocks.0.attn1.to_out.0.weight", vec![4, 4]),
        ("blocks.0.norm2.weight", vec![4]),
        ("blocks.0.scale_shift_table", vec![1, 6, 4]),
        ("scale_shift_table", vec![1, 2, 4]),
        ("proj_out.weight", vec![8, 4]),
        ("condition_embedder.text_embedder.linear_1.weight", vec![4, 3]),
    ] {
        let x = a.get(shape.as_slice(), name).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = b.get(shape.as_slice(), name).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(x, y, "{name}");
    }
    // The module path API works through prefixes as the models use it.
    let lin = candle_nn::linear_no_bias(4, 8, a.pp("blocks.0.ffn.net.0.proj")).unwrap();
    let _ = lin;
}

#[test]
fn dtype_cast_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bf16.safetensors",
        &[
            ("patch_embedding.weight", arange(&[2, 3]).to_dtype(DType::BF16).unwrap()),
            ("blocks.0.attn1.to_q.weight", arange(&[2, 2])),
        ],
    );
    let w = ModelWeights::open(&[&p]).unwrap();
    let t = w.dit_vb(DType::F32, &Device::Cpu).get((2, 3), "patch_embedding.weight").unwrap();
    assert_eq!(t.dtype(), DType::F32);
    assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0., 1., 2., 3., 4., 5.]);
    let t = w.dit_vb(DType::F16, &Device::Cpu).get((2, 2), "blocks.0.attn1.to_q.weight").unwrap();
    assert_eq!(t.dtype(), DType::F16);
}

#[test]
fn corrupt_and_truncated_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = wan_dit(dir.path());
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    let e = ModelWeights::open(&[&truncated]).unwrap_err();
    assert!(matches!(e, WeightsError::BadHeader { .. }), "{e}");
    assert!(e.to_string().contains("truncated.safetensors"), "{e}");

    let garbage = dir.path().join("garbage.safetensors");
    let mut g = bytes.clone();
    g[8] = b'x'; // header JSON no longer parses
    std::fs::write(&garbage, &g).unwrap();
    let e = ModelWeights::open(&[&garbage]).unwrap_err();
    assert!(e.to_string().contains("garbage.safetensors") && e.to_string().contains("JSON"), "{e}");

    let tiny = dir.path().join("tiny.safetensors");
    std::fs::write(&tiny, b"abc").unwrap();
    let e = ModelWeights::open(&[&tiny]).unwrap_err();
    assert!(e.to_string().contains("shorter than"), "{e}");

    let e = ModelWeights::open(&[dir.path().join("nope.safetensors")]).unwrap_err();
    assert!(matches!(e, WeightsError::Open { .. }) && e.to_string().contains("nope.safetensors"), "{e}");

    let unknown = write(dir.path(), "unknown.safetensors", &[("foo.bar", arange(&[2]))]);
    let e = ModelWeights::open(&[&unknown]).unwrap_err();
    assert!(e.to_string().contains("foo.bar"), "{e}");
}

#[test]
fn missing_tensor_wrong_shape_and_dtype_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = wan_dit(dir.path());
    let int = write(
        dir.path(),
        "int_vae.safetensors",
        &[("encoder.down_blocks.0.resnets.0.conv1.weight", Tensor::new(&[1i64, 2], &Device::Cpu).unwrap())],
    );
    let w = ModelWeights::open(&[&p, &int]).unwrap();
    let vb = w.dit_vb(DType::F32, &Device::Cpu);
    let e = vb.get((4, 4), "blocks.0.attn1.to_k.weight").unwrap_err().to_string();
    assert!(e.contains("blocks.0.attn1.to_k.weight") && e.contains("wan_dit.safetensors"), "{e}");
    let e = vb.get((4, 5), "blocks.0.attn1.to_q.weight").unwrap_err().to_string();
    assert!(
        e.contains("blocks.0.attn1.to_q.weight") && e.contains("blocks.0.self_attn.q.weight") && e.contains("[4, 5]"),
        "{e}"
    );
    let e = w
        .vae_vb(DType::F32, &Device::Cpu)
        .get(2, "encoder.down_blocks.0.resnets.0.conv1.weight")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unsupported dtype") && e.contains("I64"), "{e}");
    // A component without any file says so.
    let e =
        w.wav2vec2_vb(DType::F32, &Device::Cpu).get(2, "feature_projection.projection.bias").unwrap_err().to_string();
    assert!(e.contains("no wav2vec2 weights file"), "{e}");
    assert!(w.has(Component::Dit) && w.has(Component::Vae) && !w.has(Component::Wav2Vec2));
}

#[test]
fn wav2vec2_prefix_and_our_audio_file() {
    let dir = tempfile::tempdir().unwrap();
    let w2v = write(
        dir.path(),
        "w2v.safetensors",
        &[
            ("wav2vec2.feature_projection.projection.bias", arange(&[3])),
            ("wav2vec2.encoder.pos_conv_embed.conv.weight_g", arange(&[1, 1, 2])),
            ("lm_head.weight", arange(&[5, 3])),
        ],
    );
    let ours = write(
        dir.path(),
        "streamavatar_audio.safetensors",
        &[
            ("prompt_embeds", arange(&[2, 3])),
            ("blocks.0.norm_talk.weight", arange(&[4])),
            ("audio_proj.proj1.weight", arange(&[4, 4])),
        ],
    );
    let w = ModelWeights::open(&[&w2v, &ours]).unwrap();
    assert_eq!(w.files()[0].kind, FileKind::Wav2Vec2);
    assert_eq!(w.files()[1].kind, FileKind::StreamAvatarAudio);
    let vb = w.wav2vec2_vb(DType::F32, &Device::Cpu);
    assert_eq!(vb.get(3, "feature_projection.projection.bias").unwrap().to_vec1::<f32>().unwrap(), vec![0., 1., 2.]);
    // Both spellings of the weight-normed positional conv are served.
    assert!(vb.contains_tensor("encoder.pos_conv_embed.conv.parametrizations.weight.original0"));
    let dit = w.dit_vb(DType::F32, &Device::Cpu);
    assert!(dit.contains_tensor("blocks.0.norm_talk.weight"));
    let pe = load_prompt_embeds(&dit, 5, 3).unwrap();
    assert_eq!(pe.dims(), &[1, 5, 3]);
    let rows = pe.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(rows[1], vec![3., 4., 5.]);
    assert_eq!(rows[4], vec![0., 0., 0.]);
    // Longer than text_len or wrong width: clear error.
    let e = load_prompt_embeds(&dit, 1, 3).unwrap_err().to_string();
    assert!(e.contains("prompt_embeds"), "{e}");
}

#[test]
fn check_lists_missing_unexpected_and_mismatched() {
    let dir = tempfile::tempdir().unwrap();
    let p = wan_dit(dir.path());
    // Expected list recorded from "model constructors".
    let (vb, rec) = RecordingBackend::var_builder(DType::F32, &Device::Cpu);
    let _ = vb.get((4, 4), "blocks.0.attn1.to_q.weight").unwrap();
    let _ = vb.get((4, 4), "blocks.0.attn1.to_k.weight").unwrap(); // missing in file
    let _ = vb.get((9, 4), "proj_out.weight").unwrap(); // file has [8, 4]
    let _ = vb.get(4, "blocks.0.norm2.weight").unwrap();
    let _ = vb.get(4, "blocks.0.norm_talk.weight").unwrap(); // our audio file: not given
    let mut expected = ExpectedTensors::default();
    expected.add(FileKind::Transformer, rec.recorded().required);
    assert_eq!(expected.by_kind[&FileKind::StreamAvatarAudio].len(), 1);

    let w = ModelWeights::open(&[&p]).unwrap();
    let report = w.check(&expected);
    assert!(!report.ok());
    assert_eq!(report.missing[&FileKind::Transformer], vec!["blocks.0.attn1.to_k.weight".to_string()]);
    let f = &report.files[0];
    assert_eq!(f.mismatched.len(), 1);
    assert_eq!(f.mismatched[0].name, "proj_out.weight");
    assert_eq!(f.mismatched[0].got, vec![8, 4]);
    assert_eq!(f.matched, 2);
    // Unexpected are reported with their stored (Wan) names.
    assert!(f.unexpected.contains(&"head.modulation".to_string()), "{:?}", f.unexpected);
    assert_eq!(f.unexpected.len(), 9 - 3);
    assert_eq!(report.not_given, vec![FileKind::StreamAvatarAudio]);
    let text = report.to_string();
    assert!(text.contains("missing: blocks.0.attn1.to_k.weight") && text.contains("PROBLEMS FOUND"), "{text}");
}

/// The parity fixtures of the DiT and VAE (written by
/// tests/parity/make_{dit,vae}_fixtures.py from diffusers' modules, once with
/// diffusers names and once renamed to original Wan names) must load to the
/// same tensors under every canonical name.
fn fixture(name: &str) -> PathBuf {
    let dir = std::env::var("STREAMAVATAR_FIXTURES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures").into());
    Path::new(&dir).join(name)
}

fn assert_schemes_agree(diffusers: &str, wan: &str, kind: FileKind) {
    let (d, w) = (fixture(diffusers), fixture(wan));
    assert!(
        d.exists() && w.exists(),
        "fixtures {} / {} not found (set STREAMAVATAR_FIXTURES)",
        d.display(),
        w.display()
    );
    let wd = ModelWeights::open(&[&d]).unwrap();
    let ww = ModelWeights::open(&[&w]).unwrap();
    assert_eq!(ww.files()[0].kind, kind);
    assert_eq!(ww.files()[0].scheme, NameScheme::Wan);
    assert_eq!(wd.files()[0].scheme, NameScheme::Canonical);
    let component = if kind == FileKind::Vae { Component::Vae } else { Component::Dit };
    let (vd, vw) =
        (wd.var_builder(component, DType::F32, &Device::Cpu), ww.var_builder(component, DType::F32, &Device::Cpu));
    let mut compared = 0;
    for canon in ww.files()[0].canonical.keys() {
        let a = vw.get_unchecked(canon).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b =
            vd.get_unchecked(canon).unwrap_or_else(|e| panic!("{canon} (from Wan names) not in diffusers file: {e}"));
        assert_eq!(a, b.flatten_all().unwrap().to_vec1::<f32>().unwrap(), "{canon}");
        compared += 1;
    }
    assert!(compared > 40, "only {compared} tensors compared");
}

#[test]
fn dit_fixture_loads_under_both_schemes() {
    assert_schemes_agree("dit_tiny.safetensors", "dit_tiny_wan_names.safetensors", FileKind::Transformer);
}

#[test]
fn vae_fixture_loads_under_both_schemes() {
    assert_schemes_agree("vae_tiny.safetensors", "vae_tiny_wan_names.safetensors", FileKind::Vae);
}

/// `weights check` end to end: the tensor list recorded from the real
/// model constructors of `tiny` against the parity fixtures (Wan names).
#[test]
fn tiny_fixtures_pass_the_check() {
    use streamavatar::config::ModelConfig;
    use streamavatar::model::weights::expected_tensors;
    let expected = expected_tensors(&ModelConfig::tiny()).unwrap();
    let files = [fixture("dit_tiny_wan_names.safetensors"), fixture("vae_tiny_wan_names.safetensors")];
    let w = ModelWeights::open(&files).unwrap();
    let report = w.check(&expected);
    for kind in [FileKind::Transformer, FileKind::Vae] {
        assert_eq!(report.missing[&kind], Vec::<String>::new(), "{report}");
    }
    for f in &report.files {
        assert!(f.mismatched.is_empty(), "{report}");
        // The fixtures also carry the parity inputs/outputs (`in.*`, `out.*`).
        assert!(f.unexpected.iter().all(|n| n.starts_with("in.") || n.starts_with("out.")), "{report}");
        assert!(f.matched > 60, "{report}");
    }
    // The audio modules were not given: reported, not checked.
    assert!(report.not_given.contains(&FileKind::StreamAvatarAudio));
    assert!(report.not_given.contains(&FileKind::Wav2Vec2));
}
