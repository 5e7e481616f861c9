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
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Model preset or config JSON.
    #[arg(long, default_value = "tiny")]
    config: String,
    /// Weight files (safetensors); empty = the bundled model of the preset.
    #[arg(long)]
    weights: Vec<String>,
    /// cpu | cuda:N (DiT and VAE on one device) | cuda:0,cuda:1 (DiT, VAE).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Folder with the web page.
    #[arg(long, default_value = "web")]
    web_dir: String,
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
}

#[derive(Args, Debug, Clone)]
pub struct BenchCallArgs {
    #[arg(long, default_value = "tiny")]
    config: String,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
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

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(a) => anyhow::bail!("serve: not built yet ({a:?})"),
        Command::Join(a) => anyhow::bail!("join: not built yet ({a:?})"),
        Command::Render(a) => run_render(a),
        Command::Bench(BenchCommand::Generator(a)) => run_bench_generator(a),
        Command::Bench(BenchCommand::Call(a)) => anyhow::bail!("bench call: not built yet ({a:?})"),
        Command::Weights(WeightsCommand::Check(a)) => run_weights_check(a),
    }
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

fn run_bench_generator(a: BenchGeneratorArgs) -> anyhow::Result<()> {
    let report = streamavatar::bench::bench_generator(&streamavatar::bench::GeneratorBenchSpec {
        config: a.config,
        device: a.device,
        weights: a.weights,
        chunks: a.chunks,
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
