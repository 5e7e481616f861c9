//! Speech synthesis with espeak-ng, with exact phoneme timing.
//!
//! The `espeak-ng` command line only prints phoneme *timings* (`--pho`) for
//! MBROLA voices, which are not installed. The same program's library
//! (`libespeak-ng.so.1`, installed with the `espeak-ng` package) reports a
//! phoneme event with the exact sample position of every phoneme when
//! initialised with `espeakINITIALIZE_PHONEME_EVENTS`. This module loads
//! that library at run time (`dlopen`, so building the crate needs no
//! espeak headers or link-time library) and synthesises in synchronous mode:
//! audio samples and phoneme events arrive through the synth callback.
//!
//! **Determinism.** The library keeps synthesis state in function statics
//! (pitch flutter phase, wave phase, echo buffers) that carry over from one
//! utterance to the next, so two in-process calls with the same text give
//! different samples. Only the first utterance after loading is
//! reproducible (as is the `espeak-ng` program, one process per call). So
//! each synthesis runs in a short-lived `fork()`ed child that loads the
//! library fresh, synthesises once and sends samples and phoneme events back
//! through a pipe; the parent never loads the library. (Linux/glibc: the
//! child of a multi-threaded parent may use malloc and dlopen there.)
//!
//! If the library is missing, [`synthesize`] returns
//! [`EspeakError::NotInstalled`] naming the package to install.

use std::ffi::{c_char, c_int, c_short, c_uint, c_void, CStr, CString};
use std::sync::Mutex;

use super::identity::VoiceSpec;

/// Library file names tried in order.
const LIBRARY_NAMES: [&str; 2] = ["libespeak-ng.so.1", "libespeak-ng.so"];
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const ESPEAK_INITIALIZE_PHONEME_EVENTS: c_int = 0x0001;
const ESPEAK_INITIALIZE_DONT_EXIT: c_int = 0x8000;
const POS_CHARACTER: c_int = 1;
const ESPEAK_CHARS_UTF8: c_uint = 1;
const EVENT_LIST_TERMINATED: c_int = 0;
const EVENT_PHONEME: c_int = 7;
const PARAM_RATE: c_int = 1;
const PARAM_VOLUME: c_int = 2;
const PARAM_PITCH: c_int = 3;
const PARAM_RANGE: c_int = 4;
/// Longest text accepted (characters); a sentence bank line is far shorter.
pub const MAX_TEXT_CHARS: usize = 4000;

/// Errors of speech synthesis.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EspeakError {
    #[error(
        "espeak-ng is not installed (could not load {LIBRARY_NAMES:?}: {0}); \
         install it, e.g. `apt-get install espeak-ng`"
    )]
    NotInstalled(String),
    #[error("espeak-ng library lacks symbol {0}")]
    MissingSymbol(String),
    #[error("espeak-ng failed to initialise (espeak_Initialize returned {0})")]
    Init(i32),
    #[error("espeak-ng has no voice `{0}`")]
    UnknownVoice(String),
    #[error("text for speech synthesis is empty, too long (> {MAX_TEXT_CHARS} chars) or contains NUL")]
    BadText,
    #[error("espeak-ng synthesis failed with code {0}")]
    Synth(i32),
    #[error("espeak-ng produced no audio for `{0}`")]
    NoAudio(String),
    #[error("espeak-ng synthesis process: {0}")]
    Worker(String),
}

/// One phoneme as reported by espeak-ng.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhonemeEvent {
    /// espeak-ng phoneme mnemonic (e.g. `h`, `@`, `oU`, `_:` for a pause).
    pub symbol: String,
    /// Start, in samples at [`Speech::sample_rate`].
    pub sample: usize,
}

/// Synthesised speech.
#[derive(Debug, Clone, PartialEq)]
pub struct Speech {
    pub sample_rate: u32,
    /// Mono samples in [-1, 1].
    pub samples: Vec<f32>,
    /// Phonemes in time order.
    pub phonemes: Vec<PhonemeEvent>,
}

/// `espeak_EVENT` of speak_lib.h (x86-64 / aarch64 LP64 layout).
#[repr(C)]
struct EspeakEvent {
    kind: c_int,
    unique_identifier: c_uint,
    text_position: c_int,
    length: c_int,
    audio_position: c_int,
    sample: c_int,
    user_data: *mut c_void,
    id: [u8; 8],
}

type SynthCallback = unsafe extern "C" fn(*mut c_short, c_int, *mut EspeakEvent) -> c_int;
type SetVoiceFn = unsafe extern "C" fn(*const c_char) -> c_int;
type SetParameterFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type SynthFn =
    unsafe extern "C" fn(*const c_void, usize, c_uint, c_int, c_uint, c_uint, *mut c_uint, *mut c_void) -> c_int;
type SynchronizeFn = unsafe extern "C" fn() -> c_int;

/// Entry points of the library loaded in this (child) process.
struct Api {
    set_voice_by_name: SetVoiceFn,
    set_parameter: SetParameterFn,
    synth: SynthFn,
    synchronize: SynchronizeFn,
    sample_rate: u32,
}

/// Serialises forks, so that one synthesis' pipe never leaks into another's
/// child.
static FORK_LOCK: Mutex<()> = Mutex::new(());

extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *mut c_char;
    fn fork() -> c_int;
    fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn _exit(code: c_int) -> !;
}
const RTLD_NOW: c_int = 2;
const O_CLOEXEC: c_int = 0o2_000_000;

/// Output collected by the callback of the synthesis running on this thread.
#[derive(Default)]
struct Collector {
    samples: Vec<i16>,
    phonemes: Vec<PhonemeEvent>,
}

thread_local! {
    static COLLECTOR: std::cell::RefCell<Collector> = std::cell::RefCell::new(Collector::default());
}

unsafe extern "C" fn on_synth(wav: *mut c_short, numsamples: c_int, events: *mut EspeakEvent) -> c_int {
    COLLECTOR.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else { return };
        if !wav.is_null() && numsamples > 0 {
            // SAFETY: espeak-ng passes `numsamples` valid samples at `wav`.
            let chunk = unsafe { std::slice::from_raw_parts(wav, numsamples as usize) };
            c.samples.extend_from_slice(chunk);
        }
        if events.is_null() {
            return;
        }
        let mut i = 0usize;
        loop {
            // SAFETY: the event list is terminated by EVENT_LIST_TERMINATED.
            let ev = unsafe { &*events.add(i) };
            if ev.kind == EVENT_LIST_TERMINATED || i > 100_000 {
                break;
            }
            if ev.kind == EVENT_PHONEME {
                let end = ev.id.iter().position(|&b| b == 0).unwrap_or(ev.id.len());
                let symbol = String::from_utf8_lossy(&ev.id[..end]).into_owned();
                c.phonemes.push(PhonemeEvent { symbol, sample: ev.sample.max(0) as usize });
            }
            i += 1;
        }
    });
    0
}

fn symbol(handle: *mut c_void, name: &'static str) -> Result<*mut c_void, EspeakError> {
    let c = CString::new(name).map_err(|_| EspeakError::MissingSymbol(name.into()))?;
    // SAFETY: handle is a live dlopen handle, c a NUL-terminated string.
    let p = unsafe { dlsym(handle, c.as_ptr()) };
    if p.is_null() {
        Err(EspeakError::MissingSymbol(name.into()))
    } else {
        Ok(p)
    }
}

fn load() -> Result<Api, EspeakError> {
    let mut handle = std::ptr::null_mut();
    let mut why = String::new();
    for name in LIBRARY_NAMES {
        let c = CString::new(name).map_err(|e| EspeakError::NotInstalled(e.to_string()))?;
        // SAFETY: plain dlopen of a NUL-terminated file name.
        handle = unsafe { dlopen(c.as_ptr(), RTLD_NOW) };
        if !handle.is_null() {
            break;
        }
        // SAFETY: dlerror returns NULL or a NUL-terminated message.
        let e = unsafe { dlerror() };
        if !e.is_null() {
            why = unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned();
        }
    }
    if handle.is_null() {
        return Err(EspeakError::NotInstalled(why));
    }
    // SAFETY: the symbols have these C signatures in speak_lib.h.
    unsafe {
        let initialize: unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int =
            std::mem::transmute(symbol(handle, "espeak_Initialize")?);
        let set_callback: unsafe extern "C" fn(Option<SynthCallback>) =
            std::mem::transmute(symbol(handle, "espeak_SetSynthCallback")?);
        let api = Api {
            set_voice_by_name: std::mem::transmute::<*mut c_void, SetVoiceFn>(symbol(handle, "espeak_SetVoiceByName")?),
            set_parameter: std::mem::transmute::<*mut c_void, SetParameterFn>(symbol(handle, "espeak_SetParameter")?),
            synth: std::mem::transmute::<*mut c_void, SynthFn>(symbol(handle, "espeak_Synth")?),
            synchronize: std::mem::transmute::<*mut c_void, SynchronizeFn>(symbol(handle, "espeak_Synchronize")?),
            sample_rate: 0,
        };
        let rate = initialize(
            AUDIO_OUTPUT_SYNCHRONOUS,
            0,
            std::ptr::null(),
            ESPEAK_INITIALIZE_PHONEME_EVENTS | ESPEAK_INITIALIZE_DONT_EXIT,
        );
        if rate <= 0 {
            return Err(EspeakError::Init(rate));
        }
        set_callback(Some(on_synth));
        Ok(Api { sample_rate: rate as u32, ..api })
    }
}

/// Synthesise `text` with `voice`. Deterministic: the same text and voice
/// give the same samples and phoneme timings (see the module docs).
pub fn synthesize(text: &str, voice: &VoiceSpec) -> Result<Speech, EspeakError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_TEXT_CHARS || text.contains('\0') {
        return Err(EspeakError::BadText);
    }
    let ctext = CString::new(text).map_err(|_| EspeakError::BadText)?;
    let cvoice = CString::new(voice.name.as_str()).map_err(|_| EspeakError::UnknownVoice(voice.name.clone()))?;
    let bytes = run_in_child(|| encode_result(&synthesize_here(&ctext, &cvoice, voice)))?;
    let speech = decode_result(&bytes)?;
    if speech.samples.is_empty() {
        return Err(EspeakError::NoAudio(text.to_string()));
    }
    Ok(speech)
}

/// Run `work` in a forked child and return the bytes it produced.
fn run_in_child(work: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, EspeakError> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let _guard = FORK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { pipe2(fds.as_mut_ptr(), O_CLOEXEC) } != 0 {
        return Err(EspeakError::Worker(format!("pipe: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: the child only runs `work` (malloc, dlopen, the espeak
    // library, a pipe write) and leaves with _exit, never returning here.
    let pid = unsafe { fork() };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        unsafe {
            close(fds[0]);
            close(fds[1]);
        }
        return Err(EspeakError::Worker(format!("fork: {e}")));
    }
    if pid == 0 {
        unsafe { close(fds[0]) };
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_default();
        // SAFETY: fds[1] is this child's own write end.
        let mut w = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        let code = if std::io::Write::write_all(&mut w, &out).is_ok() { 0 } else { 1 };
        unsafe { _exit(code) };
    }
    unsafe { close(fds[1]) };
    // SAFETY: fds[0] is the parent's read end, owned by this File from now on.
    let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut bytes = Vec::new();
    let read = r.read_to_end(&mut bytes);
    let mut status: c_int = 0;
    // SAFETY: pid is our child.
    unsafe { waitpid(pid, &mut status, 0) };
    read.map_err(|e| EspeakError::Worker(format!("reading from the synthesis child: {e}")))?;
    if status != 0 || bytes.is_empty() {
        return Err(EspeakError::Worker(format!("synthesis child failed (wait status {status})")));
    }
    Ok(bytes)
}

/// Load the library and synthesise once, in this process (the child).
fn synthesize_here(ctext: &CString, cvoice: &CString, voice: &VoiceSpec) -> Result<Speech, EspeakError> {
    let api = load()?;
    COLLECTOR.with(|c| *c.borrow_mut() = Collector::default());
    // SAFETY: `api` holds valid espeak-ng entry points; strings are
    // NUL-terminated and outlive the synchronous calls.
    unsafe {
        if (api.set_voice_by_name)(cvoice.as_ptr()) != 0 {
            return Err(EspeakError::UnknownVoice(voice.name.clone()));
        }
        (api.set_parameter)(PARAM_RATE, voice.rate.clamp(80, 450) as c_int, 0);
        (api.set_parameter)(PARAM_PITCH, voice.pitch.min(99) as c_int, 0);
        (api.set_parameter)(PARAM_RANGE, voice.range.min(99) as c_int, 0);
        (api.set_parameter)(PARAM_VOLUME, 100, 0);
        let bytes = ctext.as_bytes_with_nul();
        let rc = (api.synth)(
            bytes.as_ptr() as *const c_void,
            bytes.len(),
            0,
            POS_CHARACTER,
            0,
            ESPEAK_CHARS_UTF8,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        if rc != 0 {
            return Err(EspeakError::Synth(rc));
        }
        (api.synchronize)();
    }
    let collected = COLLECTOR.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let mut phonemes = collected.phonemes;
    phonemes.sort_by_key(|p| p.sample);
    Ok(Speech { sample_rate: api.sample_rate, samples: crate::media::pcm::i16_to_f32(&collected.samples), phonemes })
}

// Child -> parent message: tag 0 = speech (rate u32, n u32, n x i16,
// m u32, m x (sample u32, len u8, bytes)); tag 1 = error (kind u8, code i32,
// len u32, utf-8 text).
fn encode_result(r: &Result<Speech, EspeakError>) -> Vec<u8> {
    let mut out = Vec::new();
    match r {
        Ok(s) => {
            out.push(0);
            out.extend_from_slice(&s.sample_rate.to_le_bytes());
            out.extend_from_slice(&(s.samples.len() as u32).to_le_bytes());
            for &v in &s.samples {
                out.extend_from_slice(&crate::media::pcm::sample_f32_to_i16(v).to_le_bytes());
            }
            out.extend_from_slice(&(s.phonemes.len() as u32).to_le_bytes());
            for p in &s.phonemes {
                out.extend_from_slice(&(p.sample as u32).to_le_bytes());
                let b = &p.symbol.as_bytes()[..p.symbol.len().min(255)];
                out.push(b.len() as u8);
                out.extend_from_slice(b);
            }
        }
        Err(e) => {
            let (kind, code, text) = match e {
                EspeakError::NotInstalled(t) => (0u8, 0, t.clone()),
                EspeakError::MissingSymbol(t) => (1, 0, t.clone()),
                EspeakError::Init(c) => (2, *c, String::new()),
                EspeakError::UnknownVoice(t) => (3, 0, t.clone()),
                EspeakError::BadText => (4, 0, String::new()),
                EspeakError::Synth(c) => (5, *c, String::new()),
                EspeakError::NoAudio(t) => (6, 0, t.clone()),
                EspeakError::Worker(t) => (7, 0, t.clone()),
            };
            out.push(1);
            out.push(kind);
            out.extend_from_slice(&code.to_le_bytes());
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
    out
}

fn decode_result(b: &[u8]) -> Result<Speech, EspeakError> {
    let bad = || EspeakError::Worker("malformed message from the synthesis child".into());
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8], EspeakError> {
        let s = b.get(pos..pos + n).ok_or_else(bad)?;
        pos += n;
        Ok(s)
    };
    let u32_of = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    match take(1)?[0] {
        0 => {
            let sample_rate = u32_of(take(4)?);
            let n = u32_of(take(4)?) as usize;
            let raw = take(n.checked_mul(2).ok_or_else(bad)?)?;
            let samples = raw
                .chunks_exact(2)
                .map(|c| crate::media::pcm::sample_i16_to_f32(i16::from_le_bytes([c[0], c[1]])))
                .collect();
            let m = u32_of(take(4)?) as usize;
            let mut phonemes = Vec::with_capacity(m.min(1 << 16));
            for _ in 0..m {
                let sample = u32_of(take(4)?) as usize;
                let len = take(1)?[0] as usize;
                let symbol = String::from_utf8_lossy(take(len)?).into_owned();
                phonemes.push(PhonemeEvent { symbol, sample });
            }
            Ok(Speech { sample_rate, samples, phonemes })
        }
        1 => {
            let kind = take(1)?[0];
            let code = i32::from_le_bytes(take(4)?.try_into().map_err(|_| bad())?);
            let len = u32_of(take(4)?) as usize;
            let text = String::from_utf8_lossy(take(len)?).into_owned();
            Err(match kind {
                0 => EspeakError::NotInstalled(text),
                1 => EspeakError::MissingSymbol(text),
                2 => EspeakError::Init(code),
                3 => EspeakError::UnknownVoice(text),
                4 => EspeakError::BadText,
                5 => EspeakError::Synth(code),
                6 => EspeakError::NoAudio(text),
                _ => EspeakError::Worker(text),
            })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice(name: &str) -> VoiceSpec {
        VoiceSpec { name: name.into(), rate: 175, pitch: 50, range: 50 }
    }

    #[test]
    fn speech_has_audio_and_timed_phonemes() {
        let s = synthesize("Hello world.", &voice("en-us+f3")).unwrap();
        assert_eq!(s.sample_rate, 22_050);
        let secs = s.samples.len() as f64 / s.sample_rate as f64;
        assert!(secs > 0.5 && secs < 3.0, "{secs} s");
        let syms: Vec<&str> = s.phonemes.iter().map(|p| p.symbol.as_str()).collect();
        assert!(syms.contains(&"h") && syms.contains(&"oU") && syms.contains(&"w"), "{syms:?}");
        assert!(s.phonemes.windows(2).all(|w| w[0].sample <= w[1].sample));
        assert!(s.phonemes.last().unwrap().sample <= s.samples.len());
        // Deterministic, also after other utterances.
        synthesize("Something else entirely.", &voice("en")).unwrap();
        assert!(
            s == synthesize("Hello world.", &voice("en-us+f3")).unwrap(),
            "same text and voice gave different speech"
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(synthesize("   ", &voice("en")), Err(EspeakError::BadText));
        assert!(matches!(synthesize("hi", &voice("no-such-voice-xyz")), Err(EspeakError::UnknownVoice(_))));
    }
}
