//! Text to speech for `POST /speak`: runs `espeak-ng --stdout --stdin`,
//! feeds the text on stdin (never as an argument, so text cannot become an
//! option) and parses the WAV it prints. A missing binary is its own error
//! so the API can answer 501.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::wav_input::{parse_wav, MonoPcm, WavError};

/// Why synthesis failed.
#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("text to speech is not available: `{0}` is not installed (install espeak-ng)")]
    NotInstalled(String),
    #[error("espeak-ng failed: {0}")]
    Failed(String),
    #[error("espeak-ng took longer than {0:?}")]
    Timeout(Duration),
    #[error("espeak-ng produced unusable audio: {0}")]
    BadOutput(#[from] WavError),
}

/// Synthesize `text` with the espeak-ng at `binary`.
pub async fn synthesize(binary: &Path, text: &str, timeout: Duration) -> Result<MonoPcm, TtsError> {
    let mut child = Command::new(binary)
        .arg("--stdout")
        .arg("--stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => TtsError::NotInstalled(binary.display().to_string()),
            _ => TtsError::Failed(format!("cannot start {}: {e}", binary.display())),
        })?;
    let mut stdin = child.stdin.take().ok_or_else(|| TtsError::Failed("no stdin pipe".into()))?;
    let text = text.to_owned();
    let run = async move {
        stdin.write_all(text.as_bytes()).await.map_err(|e| TtsError::Failed(format!("writing text: {e}")))?;
        drop(stdin);
        child.wait_with_output().await.map_err(|e| TtsError::Failed(e.to_string()))
    };
    let output = tokio::time::timeout(timeout, run).await.map_err(|_| TtsError::Timeout(timeout))??;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(TtsError::Failed(format!("{}: {}", output.status, stderr.trim())));
    }
    Ok(parse_wav(&output.stdout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_binary_is_not_installed() {
        let e = synthesize(Path::new("/nonexistent/espeak-ng"), "hi", Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(e, TtsError::NotInstalled(_)), "{e}");
    }

    #[tokio::test]
    async fn espeak_speaks_when_installed() {
        let bin = Path::new("espeak-ng");
        match synthesize(bin, "hello there", Duration::from_secs(20)).await {
            Ok(pcm) => {
                assert!((8000..=48000).contains(&pcm.sample_rate));
                assert!(pcm.duration_ms() > 200, "{} ms", pcm.duration_ms());
                assert!(pcm.samples.iter().any(|&s| s.unsigned_abs() > 1000));
            }
            // CI installs espeak-ng; elsewhere the error must say so.
            Err(TtsError::NotInstalled(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
}
