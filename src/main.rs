//! `streamavatar` command line: serve | join | render | bench | weights.

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "streamavatar", version, about = "Real-time AI video-call avatar agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the signaling API and the call page, one agent per call.
    Serve(ServeArgs),
    /// Publish the avatar to an external WHIP endpoint (client mode).
    Join(JoinArgs),
    /// Render a clip offline from a reference image and WAV files.
    Render(RenderArgs),
    /// Benchmarks (generator, call).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Weight files: check against a config.
    #[command(subcommand)]
    Weights(WeightsCommand),
    /// Write a synthetic talking/listening avatar dataset (training data).
    Synth(SynthArgs),
    /// Train the mini model stage by stage (vae | teacher | ode_init | dmd | gan), or `bench` a config.
    Train(TrainArgs),
    /// Evaluate a model on held-out synth identities: lip sync, listening
    /// motion, identity drift, and the paper's ablation table.
    Eval(EvalArgs),
    /// Print a model config as JSON (a preset, or a config file after
    /// validation): the starting point of a custom `--config FILE`.
    Config(ConfigArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Preset name (full | mini | tiny) or config JSON.
    #[arg(default_value = "mini")]
    config: String,
}

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// Model preset or config JSON (square video).
    #[arg(long, default_value = "mini")]
    config: String,
    /// Weight files, or folders of *.safetensors (e.g. weights/mini).
    #[arg(long)]
    weights: Vec<String>,
    /// Evaluate deterministic random weights of the config (an untrained model).
    #[arg(long, conflicts_with_all = ["weights", "ground_truth"])]
    random_weights: bool,
    /// Evaluate the synth renderer itself (the reference numbers of the metrics).
    #[arg(long, conflicts_with_all = ["weights", "ablation_weights"])]
    ground_truth: bool,
    /// Evaluate the ground truth encoded and decoded by this VAE file (the
    /// best a generator decoding with it can score).
    #[arg(long, conflicts_with_all = ["weights", "ground_truth", "random_weights", "ablation_weights"])]
    vae_roundtrip: Option<String>,
    /// With --vae-roundtrip: decode with this light decoder (a `train
    /// light_decoder` checkpoint or light_decoder.safetensors) instead of
    /// the VAE's own decoder.
    #[arg(long, requires = "vae_roundtrip")]
    light_decoder: Option<String>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// VAE decoder: full (Wan2.2) or light (its safetensors among --weights).
    #[arg(long, default_value = "full")]
    decoder: streamavatar::generator::DecoderKind,
    /// Held-out identities (ids 2^32, 2^32 + 1, ...).
    #[arg(long, default_value_t = 2)]
    identities: usize,
    /// Length of each evaluated stream in seconds (identity drift is over it).
    #[arg(long, default_value_t = 300.0)]
    seconds: f64,
    /// Length of the silent-listen baseline stream (at most --seconds).
    #[arg(long, default_value_t = 60.0)]
    baseline_seconds: f64,
    /// Identity-drift window in seconds.
    #[arg(long, default_value_t = 60.0)]
    window: f64,
    /// Conversation seed (identity k uses seed + k) and generator noise seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Weights of ablation rows: student=PATH (rows 1-3; default --weights),
    /// gan_no_consistency=PATH, full=PATH; PATH is a file, a folder or a:b.
    #[arg(long)]
    ablation_weights: Vec<String>,
    /// Skip the ablation table.
    #[arg(long)]
    no_ablation: bool,
    /// JSON report path.
    #[arg(long, default_value = "eval_report.json")]
    out: String,
    /// Also write the markdown tables to this file (they are printed either way).
    #[arg(long)]
    markdown: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Stage: audio_encoder (wav2vec2 pretrained as a phone recogniser; --clip-pool conversations, default 512) | vae | light_decoder (the light decoder for a trained --vae) | teacher | lip_expert (the latent read-out of mouth openness behind --lip-sync-weight) | head_expert (the latent read-out of head pitch behind --head-motion-expert-weight) | ode_init | dmd | gan | bench (per-chunk inference cost of --config) | export (checkpoints -> weight files in --out) | recon (VAE reconstruction PSNR of --clips unseen clips, PNGs in --out) | teacher_check (a teacher checkpoint on unseen clips) | audio_probe (ridge read-out of mouth openness from the frozen wav2vec2 on held-out clips).
    stage: String,
    /// Checkpoint folder of this stage.
    #[arg(long, default_value = "runs/train")]
    out: String,
    /// Model preset or config JSON.
    #[arg(long, default_value = "mini")]
    config: String,
    /// Total steps to reach.
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// A fresh run starts from the tensors of this params.safetensors whose
    /// names and shapes match (the rest keep their initial values): e.g. a
    /// VAE with a wider decoder from a trained VAE's encoder.
    #[arg(long)]
    init_from: Option<String>,
    /// With --init-from: variables whose name contains one of these
    /// comma-separated substrings keep their initial values (e.g.
    /// `audio,norm_talk,norm_listen` re-initialises the DiT's audio branch).
    #[arg(long, value_delimiter = ',')]
    init_skip: Vec<String>,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Latent frames per clip after the reference (clip = 1 + 4k frames).
    #[arg(long, default_value_t = 3)]
    latent_frames: usize,
    #[arg(long, default_value_t = 100)]
    save_every: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Distinct training identities to cycle through.
    #[arg(long, default_value_t = 10_000)]
    identities: u64,
    /// Training clips are windows starting at a random offset in [0, this]
    /// seconds of their conversation (0: at its start; the start never
    /// shows a listening reaction).
    #[arg(long, default_value_t = streamavatar::train::data::DEFAULT_MAX_OFFSET_S)]
    clip_offset_max: f64,
    /// Place each clip's window where the head moves most among 8 random
    /// offsets (hard examples for the VAE's temporal path).
    #[arg(long, conflicts_with = "listening_windows")]
    motion_windows: bool,
    /// Place each clip's window where the synth's listening nods are
    /// largest among 8 random offsets (examples for --listen-contrast-weight).
    #[arg(long)]
    listening_windows: bool,
    /// teacher: stage-1 VAE params.safetensors (default: seeded random).
    #[arg(long)]
    vae: Option<String>,
    /// teacher, audio_probe: wav2vec2 safetensors (default: seeded random, frozen).
    #[arg(long)]
    wav2vec2: Option<String>,
    /// ode_init, dmd, gan: the teacher's params.safetensors (default: seeded random); export: the final student's.
    #[arg(long)]
    teacher: Option<String>,
    /// dmd: the ode_init params.safetensors; gan: the dmd params.safetensors
    /// (default: a copy of the teacher).
    #[arg(long)]
    student: Option<String>,
    /// dmd, gan: critic (fake score / discriminator) updates per generator step
    /// (default: dmd 5, gan 1).
    #[arg(long)]
    critic_updates: Option<usize>,
    /// dmd, gan: learning rate of the critic (default: --lr).
    #[arg(long)]
    critic_lr: Option<f64>,
    /// dmd: always backpropagate through the last denoising step (default: a
    /// random exit step per generator step, Self-Forcing).
    #[arg(long)]
    no_random_exit: bool,
    /// gan: Q-Former heads of the discriminator (N_Q).
    #[arg(long, default_value_t = 3)]
    disc_heads: usize,
    /// gan: train the discriminator's backbone too (default: frozen teacher).
    #[arg(long)]
    disc_train_backbone: bool,
    /// gan: drop the discriminator's global reference-consistency branch (ablation).
    #[arg(long)]
    no_consistency: bool,
    /// gan: weights of the finite-difference R1 / R2 penalties.
    #[arg(long, default_value_t = 100.0)]
    r1: f64,
    #[arg(long, default_value_t = 100.0)]
    r2: f64,
    /// teacher_check: Euler steps of the teacher's flow ODE.
    #[arg(long, default_value_t = 24)]
    euler_steps: usize,
    /// ode_init: teacher Euler steps per student interval.
    #[arg(long, default_value_t = 8)]
    substeps: usize,
    /// teacher, ode_init, dmd, gan: train on the first K clips, cycling
    /// (each clip's latents and audio features are computed once; default:
    /// an endless stream of new clips).
    #[arg(long)]
    clip_pool: Option<u64>,
    /// With --clip-pool: keep the prepared clips in this folder too (a
    /// resumed run does not encode them again; bound to the VAE / wav2vec2
    /// files and the clip source by its key.json).
    #[arg(long)]
    sample_cache: Option<String>,
    /// Train on one fixed clip (overfitting / smoke check).
    #[arg(long)]
    fixed_data: bool,
    /// vae: train on random square crops of this side (a multiple of 16).
    #[arg(long)]
    crop: Option<usize>,
    /// vae: weight of the KL term (see train/vae_stage.rs for why the
    /// default is small).
    #[arg(long, default_value_t = streamavatar::train::vae_stage::VaeLossWeights::default().kl)]
    kl_weight: f64,
    /// vae, light_decoder: weight of the low-passed chroma L1 term (0 = off).
    #[arg(long, default_value_t = 0.0)]
    chroma_weight: f64,
    /// vae, light_decoder: weight of the face-region term (L1 + edge L1 inside the face
    /// with room for head motion; 0 = off).
    #[arg(long, default_value_t = 0.0)]
    face_weight: f64,
    /// vae, light_decoder: weight of the temporal term (L1 between the frame-to-frame
    /// changes of reconstruction and clip: flicker; 0 = off).
    #[arg(long, default_value_t = 0.0)]
    temporal_weight: f64,
    /// vae, light_decoder: weight of the temporal term inside the face
    /// region (head nods; needs --face-weight > 0 for the mask; 0 = off).
    #[arg(long, default_value_t = 0.0)]
    face_temporal_weight: f64,
    /// vae, light_decoder: weight of the mouth term (reconstruction and
    /// frame-to-frame change inside the mouth box; 0 = off).
    #[arg(long, default_value_t = 0.0)]
    mouth_weight: f64,
    /// vae, light_decoder: weight of the head-motion term (the change over
    /// 6 frames inside the face region, which a nod's displacement shows
    /// whole; 0 = off).
    #[arg(long, default_value_t = 0.0)]
    head_motion_weight: f64,
    /// vae: train the decoder only (the encoder, hence the latents and the
    /// DiT stages' clip pools, stay as they are).
    #[arg(long)]
    freeze_encoder: bool,
    /// teacher: share (0-1) of the steps whose noise level is drawn
    /// without the sampler's shift warp (low noise levels get trained).
    #[arg(long, default_value_t = 0.0)]
    unshifted_sigma_share: f64,
    /// teacher: loss weight (>= 1) of the latent pixels over the mouth
    /// against 1 elsewhere (1 = plain MSE).
    #[arg(long, default_value_t = 1.0)]
    mouth_loss_weight: f64,
    /// teacher: score the clean-latent estimate's error (the velocity
    /// error times sigma^2) so low-noise steps stop dominating.
    #[arg(long)]
    sample_space_loss: bool,
    /// teacher, teacher_check: the lip-sync expert (`train lip_expert`'s
    /// params.safetensors) whose read-out of the clean estimate is scored
    /// against the synth's true mouth openness.
    #[arg(long)]
    lip_expert: Option<String>,
    /// teacher: weight of the lip-sync expert's loss (needs --lip-expert).
    #[arg(long, default_value_t = 0.0)]
    lip_sync_weight: f64,
    /// lip_expert, head_expert: std of the Gaussian noise added to the
    /// latents it reads while fitting (normalised latent units).
    #[arg(long, default_value_t = 0.1)]
    lip_expert_noise: f64,
    /// teacher, teacher_check: the head expert (`train head_expert`'s
    /// params.safetensors) whose read-out of the clean estimate is scored
    /// against the synth's true head pitch (nods).
    #[arg(long)]
    head_expert: Option<String>,
    /// teacher: weight of the head expert's loss (needs --head-expert).
    #[arg(long, default_value_t = 0.0)]
    head_motion_expert_weight: f64,
    /// teacher: weight of the listen-contrast term (needs --head-expert):
    /// the head read-out of the clean estimate with the partner's audio
    /// minus the one with silent listen tokens, against the synth's
    /// listening nods.
    #[arg(long, default_value_t = 0.0)]
    listen_contrast_weight: f64,
    /// vae: with --freeze-encoder, decode this many latent frames (a
    /// multiple of 3) before each clip's --latent-frames without gradient,
    /// so the decoder trains mid-stream with a full causal cache.
    #[arg(long, default_value_t = 0)]
    stream_warmup: usize,
    /// vae: with --freeze-encoder, add Gaussian noise of this std (in
    /// normalised latent units) to the latents before decoding.
    #[arg(long, default_value_t = 0.0)]
    latent_noise: f64,
    /// vae: decode mu instead of a posterior sample (a plain autoencoder).
    #[arg(long)]
    no_posterior_sample: bool,
    /// recon: also decode with this light decoder (a `train light_decoder`
    /// checkpoint or a TAEHV file) and report its quality cost.
    #[arg(long)]
    light_decoder: Option<String>,
    /// recon, teacher_check: clips to reconstruct / generate; audio_probe:
    /// held-out clips scored (it fits on 4x as many training clips).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1000))]
    clips: u64,
    /// Device the stage trains on: cpu | cuda:N (a `--features cuda` build;
    /// f32 weights, the same checkpoints as on the CPU).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Stop with a checkpoint after this many minutes even before --steps
    /// (`--resume` goes on from it): time-boxed runs.
    #[arg(long)]
    max_minutes: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct SynthArgs {
    /// Output folder (clip_NNNNN/ subfolders and dataset.json).
    #[arg(long)]
    out: String,
    /// Number of clips.
    #[arg(long, default_value_t = 1)]
    clips: usize,
    /// Seconds per clip.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Frame side in pixels.
    #[arg(long, default_value_t = 256)]
    size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Held-out identities and sentences (evaluation split).
    #[arg(long)]
    heldout: bool,
    /// One PNG per frame instead of a raw frames.rgb file.
    #[arg(long)]
    png: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Model preset or config JSON (default: the bundled mini model of
    /// weights/mini; `tiny` runs random weights).
    #[arg(long, default_value = "mini")]
    config: String,
    /// Weight files (safetensors); empty = the bundled model of the preset.
    #[arg(long)]
    weights: Vec<String>,
    /// cpu | cuda:N (DiT and VAE on one device) | cuda:0,cuda:1 (DiT, VAE).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Default decoder of sessions that do not choose one ("decoder" in
    /// POST /v1/sessions): full (Wan2.2) or light (taew2_2-style; its
    /// safetensors among --weights, or seeded random with random weights).
    #[arg(long, default_value = "full")]
    decoder: streamavatar::generator::DecoderKind,
    /// Folder with the web page.
    #[arg(long, default_value = "web")]
    web_dir: String,
    /// Concurrent call agents (API sessions + room avatars); more get 503.
    #[arg(long, default_value_t = 2)]
    max_sessions: usize,
    /// Allowed CORS origin (repeatable; `*` = any). None = same-origin only.
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// On SIGTERM/SIGINT: seconds running calls may go on (new sessions are
    /// refused at once) before they are hung up and the process exits 0.
    #[arg(long, default_value_t = 30)]
    drain_grace_s: u64,
    /// End sessions whose peer has not connected this many seconds after creation
    /// (long enough for a person to open the call page a backend sent them).
    #[arg(long, default_value_t = 180)]
    connect_timeout_s: u64,
    /// End sessions without a connected peer and without requests for this many seconds.
    #[arg(long, default_value_t = 300)]
    idle_timeout_s: u64,
    /// Session-scoped HTTP requests per second per session token (0 = no limit); burst is twice this.
    #[arg(long, default_value_t = 20.0)]
    token_rate: f64,
    /// STUN/TURN URL for the agents' peer connections (repeatable, or comma-separated),
    /// e.g. stun:stun.example.com:3478, turn:turn.example.com:3478?transport=udp.
    #[arg(long = "ice-server")]
    ice_servers: Vec<String>,
    /// TURN username (for the turn:/turns: URLs).
    #[arg(long, env = "STREAMAVATAR_ICE_USERNAME")]
    ice_username: Option<String>,
    /// TURN credential; prefer the environment variable (command lines are visible to `ps`).
    #[arg(long, env = "STREAMAVATAR_ICE_CREDENTIAL", hide_env_values = true)]
    ice_credential: Option<String>,
    /// API key that POST /v1/sessions and room `request_avatar` must present as
    /// `Authorization: Bearer <key>` (repeatable or comma-separated: several keys are
    /// valid at once, for rotation). Prefer the environment variable. None = open.
    #[arg(long = "api-key", env = "STREAMAVATAR_API_KEY", hide_env_values = true)]
    api_keys: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct JoinArgs {
    #[arg(long)]
    whip: String,
    #[arg(long)]
    whep: Option<String>,
    #[arg(long)]
    token: Option<String>,
    #[arg(long, default_value = "tiny")]
    config: String,
    #[arg(long)]
    weights: Vec<String>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// VAE decoder: full (Wan2.2) or light (taew2_2-style; its safetensors
    /// among --weights, or seeded random with random model weights).
    #[arg(long, default_value = "full")]
    decoder: streamavatar::generator::DecoderKind,
}

#[derive(Args, Debug, Clone)]
pub struct RenderArgs {
    #[arg(long, default_value = "tiny")]
    config: String,
    #[arg(long)]
    weights: Vec<String>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Reference image (PNG/JPEG).
    #[arg(long)]
    reference: Option<String>,
    /// Talk audio WAV.
    #[arg(long)]
    talk: Option<String>,
    /// Listen audio WAV.
    #[arg(long)]
    listen: Option<String>,
    /// Seconds to render.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Output folder for PNG frames.
    #[arg(long, default_value = "render_out")]
    out: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// VAE decoder: full (Wan2.2) or light (taew2_2-style; its safetensors
    /// among --weights, or seeded random with random model weights).
    #[arg(long, default_value = "full")]
    decoder: streamavatar::generator::DecoderKind,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Per-stage timing of the streaming generator.
    Generator(BenchGeneratorArgs),
    /// Offer -> first frame, fps, CPU, A/V offset of a loopback call.
    Call(BenchCallArgs),
}

#[derive(Args, Debug, Clone)]
pub struct BenchGeneratorArgs {
    #[arg(long, default_value = "tiny")]
    config: String,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    weights: Vec<String>,
    /// Chunks to time (after one warm-up chunk).
    #[arg(long, default_value_t = 8)]
    chunks: usize,
    /// Also time the model's sections (DiT attention / FFN, VAE convs);
    /// synchronises the device around each, so chunks get slower.
    #[arg(long)]
    profile: bool,
    /// Keep attention scores in the compute dtype (bf16 on CUDA) instead of
    /// f32: less memory traffic, a little less precision.
    #[arg(long)]
    half_scores: bool,
    /// full: the Wan2.2 VAE decoder; light: the taew2_2-style light decoder
    /// (weights: its safetensors among --weights, else seeded random).
    #[arg(long, default_value = "full")]
    decoder: streamavatar::generator::DecoderKind,
    /// Run the VAE stage on its own thread (default: on for a GPU pair
    /// `cuda:A,cuda:B`, off otherwise); `--pipeline false` turns it off.
    #[arg(long)]
    pipeline: Option<bool>,
    /// Do not use the fused attention kernel (CUDA, bf16): the materialised
    /// score matrix instead, for A/B runs.
    #[arg(long)]
    no_flash: bool,
    /// Do not use the VAE's CUDA kernels (implicit-GEMM convolution, fused
    /// norm + SiLU): candle's im2col convolution and ops, for A/B runs.
    #[arg(long)]
    no_vae_kernels: bool,
    /// Do not use the DiT's fused CUDA kernels (modulation, gated
    /// residual, LayerNorm): candle's ops, for A/B runs.
    #[arg(long)]
    no_dit_kernels: bool,
    /// Do not use the attention glue kernels (q/k norm + RoPE + head split,
    /// the few-key audio attention): candle's ops, for A/B runs.
    #[arg(long)]
    no_attn_kernels: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BenchCallArgs {
    #[arg(long, default_value = "tiny")]
    config: String,
    /// Generator device of the agents: cpu | cuda:N | cuda:A,cuda:B.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// VAE decoder of the agents: full | light.
    #[arg(long, default_value = "full")]
    decoder: streamavatar::generator::DecoderKind,
    /// Length of the sustained measurement window.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Concurrent loopback calls.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Address of the in-process server (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Server capacity (max sessions); below --sessions the extra calls must get 503.
    #[arg(long)]
    capacity: Option<usize>,
    /// Repeat the talk burst every this many seconds (talk/listen alternation, soaks).
    #[arg(long)]
    talk_every: Option<f64>,
    /// Fault injection: the client drops this percent of received video RTP packets
    /// (freezes until a keyframe, asks for it with PLI).
    #[arg(long, default_value_t = 0.0)]
    video_loss: f64,
    /// Fault injection: the client holds each received video RTP packet for a random
    /// 0..J ms (packets reorder, as under netem jitter; bounded queue, overflow dropped).
    #[arg(long, default_value_t = 0)]
    video_jitter_ms: u64,
    /// Sample the process RSS every this many seconds and print the series (soaks).
    #[arg(long)]
    rss_every: Option<f64>,
}

#[derive(Subcommand)]
enum WeightsCommand {
    /// List missing, unexpected and shape-mismatched tensors against a config.
    Check(WeightsCheckArgs),
}

#[derive(Args, Debug, Clone)]
pub struct WeightsCheckArgs {
    #[arg(long, default_value = "full")]
    config: String,
    /// safetensors files (transformer, VAE, wav2vec2, streamavatar audio file).
    files: Vec<String>,
}

/// candle 0.11 asks for its CPU thread count on every parallel op (each
/// matmul and convolution) and, without `RAYON_NUM_THREADS`, counts the
/// physical cores by reading `/proc/cpuinfo` each time: ~2,300 reads a
/// second in a VAE training step on 2 cores, ~17 % of the CPU time in the
/// kernel formatting that file (perf, 2026-11-26). Fix the count candle
/// would pick, once, before any thread exists; an explicit
/// `RAYON_NUM_THREADS` is kept.
fn pin_cpu_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

fn main() -> anyhow::Result<()> {
    pin_cpu_thread_count();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(a) => tokio::runtime::Runtime::new()?.block_on(run_serve(a)),
        Command::Join(a) => tokio::runtime::Runtime::new()?.block_on(run_join(a)),
        Command::Render(a) => run_render(a),
        Command::Bench(BenchCommand::Generator(a)) => run_bench_generator(a),
        Command::Bench(BenchCommand::Call(a)) => tokio::runtime::Runtime::new()?.block_on(run_bench_call(a)),
        Command::Weights(WeightsCommand::Check(a)) => run_weights_check(a),
        Command::Synth(a) => run_synth(a),
        Command::Train(a) => run_train(a),
        Command::Eval(a) => run_eval(a),
        Command::Config(a) => {
            let cfg = streamavatar::config::ModelConfig::load(&a.config)?;
            println!("{}", serde_json::to_string_pretty(&cfg)?);
            Ok(())
        }
    }
}

/// `streamavatar eval`: see src/eval/ and docs/BENCHMARKS.md ("Evaluation").
fn run_eval(a: EvalArgs) -> anyhow::Result<()> {
    use streamavatar::eval::{AblationWeights, EvalRequest, EvalSpec, EvalTarget, EvalWeights, Thresholds};
    let config = streamavatar::config::ModelConfig::load(&a.config)?;
    let target = if a.ground_truth {
        EvalTarget::GroundTruth
    } else if let Some(file) = &a.vae_roundtrip {
        if a.decoder == streamavatar::generator::DecoderKind::Light && a.light_decoder.is_none() {
            anyhow::bail!("eval --vae-roundtrip --decoder light: name the light decoder with --light-decoder FILE");
        }
        EvalTarget::VaeRoundTrip { vae: file.into(), light_decoder: a.light_decoder.as_ref().map(Into::into) }
    } else if a.random_weights {
        EvalTarget::Generator(EvalWeights::Random { seed: streamavatar::generator::streaming::RANDOM_WEIGHTS_SEED })
    } else if !a.weights.is_empty() {
        let paths: Vec<std::path::PathBuf> = a.weights.iter().map(Into::into).collect();
        EvalTarget::Generator(EvalWeights::from_paths(&paths)?)
    } else {
        anyhow::bail!("eval: give --weights FILE|FOLDER, --random-weights, --ground-truth or --vae-roundtrip FILE");
    };
    let ablation = if a.ground_truth || a.vae_roundtrip.is_some() || a.no_ablation {
        None
    } else {
        Some(AblationWeights::parse(&a.ablation_weights)?)
    };
    let spec = EvalSpec {
        size: config.stream.width,
        identities: a.identities,
        seconds: a.seconds,
        baseline_seconds: a.baseline_seconds.min(a.seconds),
        window_s: a.window,
        seed: a.seed,
        ..EvalSpec::default()
    };
    let request = EvalRequest {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        config,
        target,
        device: a.device.clone(),
        decoder: a.decoder,
        spec,
        ablation,
        thresholds: Thresholds::default(),
    };
    let report = streamavatar::eval::run_eval(&request)?;
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&a.out, json).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", a.out))?;
    let markdown = report.to_markdown();
    if let Some(path) = &a.markdown {
        std::fs::write(path, &markdown).map_err(|e| anyhow::anyhow!("cannot write {path}: {e}"))?;
    }
    println!("{markdown}");
    println!("JSON report: {}", a.out);
    Ok(())
}

/// The teacher stage over the frozen VAE / wav2vec2 named by `--vae` /
/// `--wav2vec2` (seeded random where absent).
fn teacher_stage_from_args(
    a: &TrainArgs,
    cfg: streamavatar::config::ModelConfig,
    data: streamavatar::train::data::ClipSource,
) -> anyhow::Result<streamavatar::train::teacher_stage::TeacherStage> {
    use streamavatar::train::sample_store::SampleStore;
    use streamavatar::train::teacher_stage::{FrozenModules, TeacherStage};
    let vae = a.vae.as_ref().map(std::path::PathBuf::from);
    let w2v = a.wav2vec2.as_ref().map(std::path::PathBuf::from);
    let frozen = FrozenModules::load_on(&cfg, vae.as_ref(), w2v.as_ref(), a.seed, &train_device(a)?)?;
    let samples = match (a.clip_pool, &a.sample_cache) {
        (None, None) => SampleStore::stream(),
        (None, Some(_)) => anyhow::bail!("--sample-cache needs --clip-pool K (a finite set of clips to keep)"),
        (Some(pool), dir) => {
            use streamavatar::train::sample_store::{FrozenSource, SampleKey};
            // Only the encoding half of the VAE makes the samples: a VAE
            // whose decoder was trained on (`--freeze-encoder`) keeps the pool.
            let vae_src = FrozenSource::of_tensors(
                vae.as_deref(),
                streamavatar::train::teacher_stage::frozen_vae_seed(a.seed),
                streamavatar::train::sample_store::is_vae_encoding_tensor,
            )?;
            let w2v_src = FrozenSource::of(w2v.as_deref(), streamavatar::train::export::frozen_wav2vec2_seed(a.seed))?;
            let key = SampleKey::new(&cfg.name, vae_src, w2v_src, &data, pool);
            SampleStore::pooled(key, dir.as_ref().map(std::path::PathBuf::from))?
        }
    };
    Ok(TeacherStage::new(cfg, frozen, data, a.seed).with_samples(samples))
}

/// [`teacher_stage_from_args`] with the trained teacher of `--teacher` loaded
/// (stages 3-5 distil from it).
fn pretrained_teacher_from_args(
    a: &TrainArgs,
    cfg: streamavatar::config::ModelConfig,
    data: streamavatar::train::data::ClipSource,
) -> anyhow::Result<streamavatar::train::teacher_stage::TeacherStage> {
    let teacher = teacher_stage_from_args(a, cfg, data)?;
    if let Some(p) = &a.teacher {
        teacher.store().load(std::path::Path::new(p))?;
    }
    Ok(teacher)
}

/// The single device of `train --device` (training runs on one device).
fn train_device(a: &TrainArgs) -> anyhow::Result<candle_core::Device> {
    let plan = streamavatar::generator::DevicePlan::parse(&a.device)?;
    if !plan.dit.same_device(&plan.vae) {
        anyhow::bail!("train --device takes one device (cpu or cuda:N), not a pair: `{}`", a.device);
    }
    Ok(plan.dit)
}

/// `streamavatar train <stage>`: see train/ and docs/TRAINING.md.
fn run_train(a: TrainArgs) -> anyhow::Result<()> {
    use streamavatar::train::head_expert::{HeadExpertStage, PitchTargets};
    use streamavatar::train::latent_readout::ReadoutTargets;
    use streamavatar::train::lip_expert::{LipExpertStage, OpennessTargets};
    use streamavatar::train::{
        bench,
        data::{ClipSource, WindowChoice},
        optim::AdamWConfig,
        runner, vae_stage,
    };
    let cfg = streamavatar::config::ModelConfig::load(&a.config)?;
    if a.stage == "export" {
        use streamavatar::train::export::{export, frozen_wav2vec2_seed, ExportSources};
        let (Some(vae), Some(dit)) = (&a.vae, &a.teacher) else {
            anyhow::bail!("train export needs --vae <stage-1 params> and --teacher <final student params> (--out = the weights folder)");
        };
        let src = ExportSources {
            vae: vae.into(),
            dit: dit.into(),
            wav2vec2: a.wav2vec2.as_ref().map(Into::into),
            wav2vec2_seed: frozen_wav2vec2_seed(a.seed),
        };
        let report = export(&cfg, &src, std::path::Path::new(&a.out))?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    // The clips of every stage below (training, recon, teacher_check).
    let data = ClipSource {
        seed: a.seed,
        size: cfg.stream.width,
        latent_frames: a.latent_frames + if a.stage == "vae" { a.stream_warmup } else { 0 },
        identities: a.identities,
        max_offset_s: a.clip_offset_max,
        windows: if a.motion_windows {
            WindowChoice::Motion
        } else if a.listening_windows {
            WindowChoice::Listening
        } else {
            WindowChoice::Random
        },
    };
    if a.stage == "recon" {
        let Some(vae) = &a.vae else {
            anyhow::bail!("train recon needs --vae <stage-1 params> (--out = folder for the comparison PNGs)");
        };
        let report = streamavatar::train::recon::reconstruct(
            &cfg,
            std::path::Path::new(vae),
            a.light_decoder.as_deref().map(std::path::Path::new),
            &data,
            a.clips,
            Some(std::path::Path::new(&a.out)),
        )?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if a.stage == "teacher_check" {
        let teacher = pretrained_teacher_from_args(&a, cfg, data)?;
        let (z, dev) = (teacher.config().vae.z_dim, train_device(&a)?);
        let expert = match &a.lip_expert {
            Some(p) => Some(OpennessTargets::load(std::path::Path::new(p), z, &dev)?),
            None => None,
        };
        let head_expert = match &a.head_expert {
            Some(p) => Some(PitchTargets::load(std::path::Path::new(p), z, &dev)?),
            None => None,
        };
        let report = streamavatar::train::teacher_check::check_teacher(
            &teacher,
            a.clips,
            a.euler_steps,
            a.seed,
            expert.as_ref(),
            head_expert.as_ref(),
            Some(std::path::Path::new(&a.out)),
        )?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if a.stage == "audio_probe" {
        use streamavatar::train::audio_probe::{probe_audio_encoder, AudioProbeSpec};
        let dev = train_device(&a)?;
        let file = a.wav2vec2.as_ref().map(std::path::PathBuf::from);
        let w2v = streamavatar::train::teacher_stage::load_frozen_wav2vec2(&cfg, file.as_ref(), a.seed, &dev)?;
        let spec = AudioProbeSpec { eval_clips: a.clips, context: cfg.audio.proj_window, seed: a.seed };
        let report = probe_audio_encoder(&cfg, &w2v, &spec, &dev)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if a.stage == "bench" {
        let t = bench::measure_chunk(&cfg, 2, a.steps.clamp(1, 50) as usize)?;
        println!("{}", serde_json::to_string_pretty(&t)?);
        return Ok(());
    }
    let opts = runner::RunOptions {
        out: std::path::PathBuf::from(&a.out),
        steps: a.steps,
        resume: a.resume,
        save_every: a.save_every,
        seed: a.seed,
        config_name: cfg.name.clone(),
        optim: AdamWConfig { lr: a.lr, ..Default::default() },
        fixed_data: a.fixed_data,
        max_seconds: a.max_minutes.map(|m| m * 60.0),
        init_from: a.init_from.as_ref().map(std::path::PathBuf::from),
        init_skip: a.init_skip.clone(),
    };
    let device = train_device(&a)?;
    let report = match a.stage.as_str() {
        "vae" => {
            let weights = vae_stage::VaeLossWeights {
                kl: a.kl_weight,
                chroma: a.chroma_weight,
                face: a.face_weight,
                temporal: a.temporal_weight,
                face_temporal: a.face_temporal_weight.max(0.0),
                mouth: a.mouth_weight.max(0.0),
                head_motion: a.head_motion_weight.max(0.0),
                sample_posterior: !a.no_posterior_sample,
                ..Default::default()
            };
            let mut st = vae_stage::VaeStage::new(cfg, data, a.batch, weights, a.seed).on_device(&device);
            if let Some(side) = a.crop {
                st = st.with_crop(side)?;
            }
            if a.freeze_encoder {
                st = st.with_frozen_encoder();
            }
            st = st.with_stream_warmup(a.stream_warmup)?.with_latent_noise(a.latent_noise)?;
            runner::run(&mut st, &opts)?
        }
        "audio_encoder" => {
            use streamavatar::train::audio_encoder_stage::{AudioEncoderStage, DEFAULT_POOL};
            let pool = a.clip_pool.unwrap_or(DEFAULT_POOL);
            let mut st = AudioEncoderStage::new(cfg, pool, a.identities, a.batch, a.seed, &device);
            runner::run(&mut st, &opts)?
        }
        "light_decoder" => {
            use streamavatar::train::light_decoder_stage::{LightDecoderStage, LightLossWeights};
            let vae =
                a.vae.as_ref().map(std::path::PathBuf::from).ok_or_else(|| {
                    anyhow::anyhow!("train light_decoder needs --vae <trained VAE params.safetensors>")
                })?;
            let frozen =
                streamavatar::train::teacher_stage::FrozenModules::load_on(&cfg, Some(&vae), None, a.seed, &device)?;
            let weights = LightLossWeights {
                chroma: a.chroma_weight.max(0.0),
                face: a.face_weight.max(0.0),
                temporal: a.temporal_weight.max(0.0),
                face_temporal: a.face_temporal_weight.max(0.0),
                mouth: a.mouth_weight.max(0.0),
                head_motion: a.head_motion_weight.max(0.0),
                ..Default::default()
            };
            let mut st = LightDecoderStage::new(cfg, frozen.vae, data, a.batch, weights, a.seed);
            if let Some(side) = a.crop {
                st = st.with_crop(side)?;
            }
            runner::run(&mut st, &opts)?
        }
        "teacher" => {
            let mut st = teacher_stage_from_args(&a, cfg, data)?
                .with_unshifted_sigma_share(a.unshifted_sigma_share)?
                .with_mouth_loss_weight(a.mouth_loss_weight)?
                .with_sample_space_loss(a.sample_space_loss);
            match (&a.lip_expert, a.lip_sync_weight > 0.0) {
                (Some(path), true) => {
                    let z = st.config().vae.z_dim;
                    let expert = OpennessTargets::load(std::path::Path::new(path), z, &train_device(&a)?)?;
                    st = st.with_lip_sync(expert, a.lip_sync_weight)?;
                }
                (None, true) => anyhow::bail!("--lip-sync-weight needs --lip-expert <train lip_expert params>"),
                (Some(_), false) => anyhow::bail!("train teacher --lip-expert needs --lip-sync-weight W > 0"),
                (None, false) => {}
            }
            let (head_weight, contrast_weight) = (a.head_motion_expert_weight, a.listen_contrast_weight);
            match (&a.head_expert, head_weight > 0.0 || contrast_weight > 0.0) {
                (Some(path), true) => {
                    let z = st.config().vae.z_dim;
                    let expert = PitchTargets::load(std::path::Path::new(path), z, &train_device(&a)?)?;
                    if head_weight > 0.0 {
                        st = st.with_head_motion(expert.clone(), head_weight)?;
                    }
                    if contrast_weight > 0.0 {
                        st = st.with_listen_contrast(expert, contrast_weight)?;
                    }
                }
                (None, true) => anyhow::bail!(
                    "--head-motion-expert-weight and --listen-contrast-weight need --head-expert <train head_expert params>"
                ),
                (Some(_), false) => anyhow::bail!(
                    "train teacher --head-expert needs --head-motion-expert-weight W > 0 or --listen-contrast-weight W > 0"
                ),
                (None, false) => {}
            }
            runner::run(&mut st, &opts)?
        }
        "lip_expert" => {
            let teacher = teacher_stage_from_args(&a, cfg, data)?;
            let mut st = LipExpertStage::new(teacher, a.batch, a.lip_expert_noise, a.seed)?;
            runner::run(&mut st, &opts)?
        }
        "head_expert" => {
            let teacher = teacher_stage_from_args(&a, cfg, data)?;
            let mut st = HeadExpertStage::new(teacher, a.batch, a.lip_expert_noise, a.seed)?;
            runner::run(&mut st, &opts)?
        }
        "ode_init" => {
            let teacher = pretrained_teacher_from_args(&a, cfg, data)?;
            let mut st = streamavatar::train::ode_init_stage::OdeInitStage::new(teacher, a.substeps, a.seed)?;
            runner::run(&mut st, &opts)?
        }
        "dmd" | "gan" => {
            use streamavatar::train::{dmd_stage, gan_stage};
            let teacher = pretrained_teacher_from_args(&a, cfg, data)?;
            let student = a.student.as_ref().map(std::path::Path::new);
            let critic_optim = AdamWConfig { lr: a.critic_lr.unwrap_or(a.lr), ..Default::default() };
            if a.stage == "dmd" {
                let defaults = dmd_stage::DmdOptions::default();
                let o = dmd_stage::DmdOptions {
                    critic_updates: a.critic_updates.unwrap_or(defaults.critic_updates),
                    critic_optim,
                    random_exit: !a.no_random_exit,
                    ..defaults
                };
                let mut st = dmd_stage::DmdStage::new(teacher, student, o, a.seed)?;
                runner::run(&mut st, &opts)?
            } else {
                let defaults = gan_stage::GanOptions::default();
                let o = gan_stage::GanOptions {
                    disc: streamavatar::train::discriminator::DiscriminatorConfig {
                        heads: a.disc_heads,
                        consistency: !a.no_consistency,
                        train_backbone: a.disc_train_backbone,
                        ..defaults.disc
                    },
                    critic_updates: a.critic_updates.unwrap_or(defaults.critic_updates),
                    critic_optim: AdamWConfig { beta1: 0.0, beta2: 0.99, ..critic_optim },
                    r1: a.r1,
                    r2: a.r2,
                    ..defaults
                };
                let mut st = gan_stage::GanStage::new(teacher, student, o, a.seed)?;
                runner::run(&mut st, &opts)?
            }
        }
        other => anyhow::bail!(
            "unknown training stage `{other}` (known: audio_encoder, vae, light_decoder, teacher, ode_init, dmd, gan, export, recon, teacher_check, audio_probe, bench)"
        ),
    };
    tracing::info!(
        first = report.first_step,
        last = report.last_step,
        s_per_step = format!("{:.2}", report.seconds_per_step),
        out = %a.out,
        "training stage done"
    );
    Ok(())
}

/// `streamavatar synth`: write a synthetic dataset (see synth::dataset).
fn run_synth(a: SynthArgs) -> anyhow::Result<()> {
    use streamavatar::synth::{write_dataset, DatasetSpec, FrameFormat};
    let spec = DatasetSpec {
        out: std::path::PathBuf::from(&a.out),
        clips: a.clips,
        seconds: a.seconds,
        size: a.size,
        seed: a.seed,
        heldout: a.heldout,
        format: if a.png { FrameFormat::Png } else { FrameFormat::Raw },
    };
    let t0 = std::time::Instant::now();
    let summary = write_dataset(&spec)?;
    let ms_per_frame = 1000.0 * summary.render_s / summary.frames.max(1) as f64;
    tracing::info!(
        clips = summary.clips.len(),
        frames = summary.frames,
        render_ms_per_frame = format!("{ms_per_frame:.2}"),
        script_s = format!("{:.1}", summary.script_s),
        total_s = format!("{:.1}", t0.elapsed().as_secs_f64()),
        out = %a.out,
        "synth dataset written"
    );
    Ok(())
}

/// `streamavatar join`: publish the avatar to a WHIP endpoint, optionally
/// listen to a WHEP stream, until Ctrl-C or the call ends; then DELETE the
/// WHIP/WHEP resources.
async fn run_join(a: JoinArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use streamavatar::rtc::whip_client::WhipClient;
    use streamavatar::rtc::{Peer, PeerOptions, PeerRole};
    use streamavatar::session::{Session, SessionSpec};

    let model = streamavatar::config::ModelConfig::load(&a.config)?;
    let spec = SessionSpec {
        model,
        weights: a.weights.iter().map(std::path::PathBuf::from).collect(),
        device: a.device.clone(),
        reference: None,
        seed: 0,
        decoder: a.decoder,
    };
    let whip = WhipClient::new(&a.whip, a.token.clone())?;
    let whep = a.whep.as_deref().map(|u| WhipClient::new(u, a.token.clone())).transpose()?;
    let source = streamavatar::generator::factory::build_source(&spec).map_err(anyhow::Error::msg)?;
    let session = Session::start(spec, source)?;

    let offer = session.create_offer().await?;
    let published = whip.publish(&offer).await.context("WHIP publish")?;
    tracing::info!(resource = %published.location, "WHIP session created");
    session.accept_answer(&published.answer_sdp).await.context("WHIP answer")?;

    let mut subscription = None;
    if let Some(whep) = whep {
        let (peer, handles) =
            Peer::new(PeerOptions { role: PeerRole::Listener, include_loopback: false, ..Default::default() }).await?;
        let offer = peer.offer().await?;
        match whep.publish(&offer).await {
            Ok(res) => {
                peer.accept_answer(&res.answer_sdp).await.context("WHEP answer")?;
                tracing::info!(resource = %res.location, "WHEP subscription created");
                session.listen_from(handles.remote_audio);
                subscription = Some((whep, res, peer));
            }
            Err(e) => {
                peer.close().await;
                session.close().await;
                let _ = whip.delete(&published).await;
                return Err(e).context("WHEP subscribe");
            }
        }
    }

    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted; leaving the call"); break; }
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                if session.is_closed() { tracing::info!("call ended"); break; }
            }
        }
    }
    session.close().await;
    if let Err(e) = whip.delete(&published).await {
        tracing::warn!("WHIP DELETE failed: {e}");
    }
    if let Some((client, res, peer)) = subscription {
        peer.close().await;
        if let Err(e) = client.delete(&res).await {
            tracing::warn!("WHEP DELETE failed: {e}");
        }
    }
    Ok(())
}

fn run_weights_check(a: WeightsCheckArgs) -> anyhow::Result<()> {
    use streamavatar::model::weights::{expected_tensors, ModelWeights};
    if a.files.is_empty() {
        anyhow::bail!("weights check: give at least one safetensors file");
    }
    let cfg = streamavatar::config::ModelConfig::load(&a.config)?;
    let expected = expected_tensors(&cfg).map_err(|e| anyhow::anyhow!("building the expected tensor list: {e}"))?;
    let weights = ModelWeights::open(&a.files)?;
    let report = weights.check(&expected);
    println!("config {}: {} expected tensors", cfg.name, expected.total());
    println!("{report}");
    if !report.ok() {
        std::process::exit(1);
    }
    Ok(())
}

/// `streamavatar serve`: the signaling server and the page, one agent per call.
async fn run_serve(a: ServeArgs) -> anyhow::Result<()> {
    use std::sync::Arc;
    use streamavatar::signaling::{self, session_agent::SessionAgentFactory, AgentFactory, AppState, ServerConfig};

    let model = streamavatar::config::ModelConfig::load(&a.config)?;
    let mut cfg = ServerConfig::new(model);
    cfg.weights = a.weights.iter().map(std::path::PathBuf::from).collect();
    cfg.device = a.device.clone();
    cfg.decoder = a.decoder;
    cfg.max_sessions = a.max_sessions;
    cfg.cors_origins = a.cors_origins.clone();
    cfg.drain_grace = std::time::Duration::from_secs(a.drain_grace_s);
    cfg.expiry = signaling::expiry::ExpiryPolicy {
        connect_timeout: std::time::Duration::from_secs(a.connect_timeout_s),
        idle_timeout: std::time::Duration::from_secs(a.idle_timeout_s),
    };
    if !(a.token_rate.is_finite() && a.token_rate >= 0.0) {
        anyhow::bail!("--token-rate must be a number >= 0 (got {})", a.token_rate);
    }
    cfg.token_rate = signaling::rate_limit::RateLimit { per_second: a.token_rate, burst: 2.0 * a.token_rate };
    cfg.api_keys = signaling::api_key::ApiKeys::parse(&a.api_keys).map_err(|e| anyhow::anyhow!("--api-key: {e}"))?;
    let ice_servers = streamavatar::rtc::ice_servers_from_flags(
        &a.ice_servers,
        a.ice_username.as_deref(),
        a.ice_credential.as_deref(),
    )?;
    let mut session_options = streamavatar::session::SessionOptions::default();
    session_options.peer.ice_servers = ice_servers;
    let web_dir = std::path::PathBuf::from(&a.web_dir);
    if web_dir.join("index.html").is_file() {
        cfg.web_dir = Some(web_dir);
    } else {
        tracing::warn!(dir = %a.web_dir, "no index.html there: serving the API only");
    }
    // The product agent (crate::session::Session + the streaming generator)
    // is plugged in through signaling::session_agent::SessionAgentFactory.
    let factory: Arc<dyn AgentFactory> = Arc::new(SessionAgentFactory::with_options(
        streamavatar::generator::factory::build_source,
        session_options.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", a.listen))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        model = %cfg.model.name,
        device = %cfg.device,
        max_sessions = cfg.max_sessions,
        drain_grace_s = a.drain_grace_s,
        ice_servers = ?session_options.peer.ice_servers,
        api_keys = cfg.api_keys.len(),
        "serving"
    );
    if !cfg.api_keys.is_required() && !listener.local_addr()?.ip().is_loopback() {
        tracing::warn!(
            "listening on a non-loopback address without --api-key (STREAMAVATAR_API_KEY): \
             anyone who can reach it can start call agents"
        );
    }
    let state = AppState::new(cfg, factory);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        let name = tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        };
        tracing::info!(signal = name, "stop signal: draining");
    };
    signaling::serve(listener, state, shutdown).await?;
    Ok(())
}

/// `streamavatar bench call`: loopback calls against the in-process server.
async fn run_bench_call(a: BenchCallArgs) -> anyhow::Result<()> {
    let spec = streamavatar::bench_call::CallBenchSpec {
        model: streamavatar::config::ModelConfig::load(&a.config)?,
        device: a.device.clone(),
        decoder: a.decoder,
        seconds: a.seconds,
        sessions: a.sessions,
        listen: a.listen.clone(),
        capacity: a.capacity,
        talk_every_s: a.talk_every,
        video_loss_percent: a.video_loss,
        video_jitter_ms: a.video_jitter_ms,
        rss_every_s: a.rss_every,
    };
    let report = streamavatar::bench_call::bench_call(&spec).await?;
    println!(
        "bench call: config {} ({}x{} @ {} fps), {} session(s), {:.0} s window, build {}",
        spec.model.name,
        spec.model.stream.width,
        spec.model.stream.height,
        spec.model.stream.fps,
        spec.sessions,
        spec.seconds,
        if cfg!(debug_assertions) { "dev" } else { "release" }
    );
    print!("{}", report.render());
    if let Some(why) = &report.ended_early {
        anyhow::bail!("a call ended before the window did ({why})");
    }
    Ok(())
}

fn run_bench_generator(a: BenchGeneratorArgs) -> anyhow::Result<()> {
    let report = streamavatar::bench::bench_generator(&streamavatar::bench::GeneratorBenchSpec {
        config: a.config,
        device: a.device,
        weights: a.weights,
        chunks: a.chunks,
        profile: a.profile,
        half_scores: a.half_scores,
        decoder: a.decoder,
        pipeline: a.pipeline,
        flash: !a.no_flash,
        vae_kernels: !a.no_vae_kernels,
        dit_kernels: !a.no_dit_kernels,
        attn_kernels: !a.no_attn_kernels,
    })?;
    println!("{report}");
    Ok(())
}

fn run_render(a: RenderArgs) -> anyhow::Result<()> {
    let summary = streamavatar::render::render(&streamavatar::render::RenderSpec {
        config: a.config,
        weights: a.weights,
        device: a.device,
        reference: a.reference.map(Into::into),
        talk: a.talk.map(Into::into),
        listen: a.listen.map(Into::into),
        seconds: a.seconds,
        out: a.out.clone().into(),
        seed: a.seed,
        decoder: a.decoder,
    })?;
    println!(
        "wrote {} frames ({} chunks) to {} in {:.1} s of generation",
        summary.frames_written,
        summary.chunks,
        a.out,
        summary.generation_ms / 1e3
    );
    Ok(())
}
