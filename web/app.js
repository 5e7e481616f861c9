// streamavatar call page: create a session, publish camera + mic with a
// WHIP offer, play the avatar's video and audio, show live stats, send
// text to /speak, hang up. No build step, no external scripts.
"use strict";

const $ = (id) => document.getElementById(id);

const ui = {
  avatarVideo: $("avatar"),
  selfVideo: $("self"),
  placeholder: $("placeholder"),
  startForm: $("start-form"),
  avatarImage: $("avatar-image"),
  apiKey: $("api-key"),
  useCamera: $("use-camera"),
  start: $("start"),
  hangup: $("hangup"),
  sayForm: $("say-form"),
  sayText: $("say-text"),
  say: $("say"),
  message: $("message"),
  st: {
    session: $("st-session"),
    conn: $("st-conn"),
    ice: $("st-ice"),
    fps: $("st-fps"),
    rxFps: $("st-rx-fps"),
    latency: $("st-latency"),
    repeated: $("st-repeated"),
    queue: $("st-queue"),
  },
};

/** State of the current call (null when idle). */
let call = null;

function show(text, isError = false) {
  ui.message.textContent = text;
  ui.message.classList.toggle("error", isError);
}

function setField(el, text, cls) {
  el.textContent = text;
  el.classList.remove("good", "bad");
  if (cls) el.classList.add(cls);
}

/** Error text from a JSON API error body, or the status line. */
async function apiError(resp) {
  try {
    const body = await resp.json();
    if (body && body.message) return `${resp.status}: ${body.message}`;
  } catch (_) { /* not JSON */ }
  return `${resp.status} ${resp.statusText}`;
}

/** Create a session; `apiKey` only when the server requires one (serve --api-key). */
async function createSession(file, apiKey) {
  let init;
  if (file) {
    const form = new FormData();
    form.append("image", file);
    init = { method: "POST", headers: {}, body: form };
  } else {
    init = { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" };
  }
  if (apiKey) init.headers.Authorization = `Bearer ${apiKey}`;
  const resp = await fetch("/v1/sessions", init);
  if (resp.status === 401) {
    ui.apiKey.focus();
    throw new Error(`create session: ${await apiError(resp)} — enter the server's API key above.`);
  }
  if (!resp.ok) throw new Error(`create session: ${await apiError(resp)}`);
  return resp.json();
}

/** Resolve when ICE gathering completes (the server does not trickle), or after `ms`. */
function iceGatheringDone(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

async function getLocalMedia() {
  if (!ui.useCamera.checked) return null;
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
  } catch (e) {
    show(`Camera/microphone unavailable (${e.name}); joining receive-only.`, true);
    return null;
  }
}

async function startCall(event) {
  event.preventDefault();
  if (call) return;
  ui.start.disabled = true;
  show("Creating session…");
  let session;
  try {
    // ?session=<id>&token=<token> joins an existing session (e.g. one a
    // dialog backend created); otherwise the page creates its own.
    const params = new URLSearchParams(location.search);
    if (params.get("session") && params.get("token")) {
      const id = params.get("session");
      session = { id, token: params.get("token"), whip_url: `/v1/sessions/${id}/whip`, talk_url: `/v1/sessions/${id}/talk` };
    } else {
      session = await createSession(ui.avatarImage.files[0] || null, ui.apiKey.value.trim());
    }
  } catch (e) {
    show(e.message, true);
    ui.start.disabled = false;
    return;
  }
  const pc = new RTCPeerConnection({ iceServers: [] });
  call = { session, pc, location: null, local: null, statsTimer: null, lastFrames: null };
  setField(ui.st.session, session.id.slice(0, 12) + "…");

  pc.addEventListener("connectionstatechange", () => {
    const s = pc.connectionState;
    setField(ui.st.conn, s, s === "connected" ? "good" : (s === "failed" ? "bad" : null));
    if (s === "failed") show("Connection failed.", true);
  });
  pc.addEventListener("iceconnectionstatechange", () => setField(ui.st.ice, pc.iceConnectionState));
  pc.addEventListener("track", (ev) => {
    const stream = ev.streams[0] || new MediaStream([ev.track]);
    if (ui.avatarVideo.srcObject !== stream) {
      ui.avatarVideo.srcObject = stream;
      ui.placeholder.hidden = true;
      ui.avatarVideo.play().catch(() => {});
    }
  });

  const local = await getLocalMedia();
  call.local = local;
  if (local) {
    for (const track of local.getTracks()) pc.addTransceiver(track, { direction: "sendrecv", streams: [local] });
    ui.selfVideo.srcObject = local;
    ui.selfVideo.dataset.live = "1";
  } else {
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.addTransceiver("video", { direction: "recvonly" });
  }

  try {
    show("Negotiating…");
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringDone(pc, 3000);
    const resp = await fetch(session.whip_url, {
      method: "POST",
      headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${session.token}` },
      body: pc.localDescription.sdp,
    });
    if (resp.status !== 201) throw new Error(`WHIP offer: ${await apiError(resp)}`);
    call.location = resp.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
  } catch (e) {
    show(e.message, true);
    await hangUp();
    return;
  }
  show("Connected. Say something to the avatar, or type below.");
  ui.hangup.disabled = false;
  ui.sayText.disabled = false;
  ui.say.disabled = false;
  call.statsTimer = setInterval(pollStats, 1000);
}

async function pollStats() {
  if (!call) return;
  const { session, pc } = call;
  try {
    const resp = await fetch(`/v1/sessions/${session.id}`, { headers: { Authorization: `Bearer ${session.token}` } });
    if (resp.status === 404) {
      show("The session ended on the server.", true);
      await hangUp();
      return;
    }
    if (resp.ok) {
      const info = await resp.json();
      const s = info.stats;
      setField(ui.st.fps, s.fps.toFixed(1));
      setField(ui.st.latency, `${Math.round(s.latency_ms)} ms`);
      setField(ui.st.repeated, `${s.frames_repeated} (skipped chunks ${s.chunks_skipped})`);
      setField(ui.st.queue, `${s.talk_queue_ms} ms`);
    }
  } catch (_) { /* transient */ }
  try {
    const report = await pc.getStats();
    report.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") {
        let fps = r.framesPerSecond;
        if (fps === undefined && call.lastFrames) {
          const dt = (r.timestamp - call.lastFrames.t) / 1000;
          fps = dt > 0 ? (r.framesDecoded - call.lastFrames.n) / dt : 0;
        }
        call.lastFrames = { t: r.timestamp, n: r.framesDecoded || 0 };
        if (fps !== undefined) setField(ui.st.rxFps, Number(fps).toFixed(1));
      }
    });
  } catch (_) { /* closed */ }
}

async function say(event) {
  event.preventDefault();
  if (!call) return;
  const text = ui.sayText.value.trim();
  if (!text) return;
  ui.say.disabled = true;
  try {
    const resp = await fetch(`/v1/sessions/${call.session.id}/speak`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${call.session.token}` },
      body: JSON.stringify({ text }),
    });
    if (resp.status === 202) {
      const q = await resp.json();
      show(`Queued ${(q.duration_ms / 1000).toFixed(1)} s of speech.`);
      ui.sayText.value = "";
    } else {
      show(`Say failed: ${await apiError(resp)}`, true);
    }
  } catch (e) {
    show(`Say failed: ${e.message}`, true);
  } finally {
    ui.say.disabled = !call;
  }
}

async function hangUp() {
  if (!call) return;
  const { session, pc, location, local, statsTimer } = call;
  call = null;
  clearInterval(statsTimer);
  // Deleting the WHIP resource ends the session; without one, delete the session.
  const target = location || `/v1/sessions/${session.id}`;
  try {
    await fetch(target, { method: "DELETE", headers: { Authorization: `Bearer ${session.token}` } });
  } catch (_) { /* server gone */ }
  pc.close();
  if (local) local.getTracks().forEach((t) => t.stop());
  ui.avatarVideo.srcObject = null;
  ui.selfVideo.srcObject = null;
  delete ui.selfVideo.dataset.live;
  ui.placeholder.hidden = false;
  ui.start.disabled = false;
  ui.hangup.disabled = true;
  ui.sayText.disabled = true;
  ui.say.disabled = true;
  setField(ui.st.conn, "idle");
  setField(ui.st.ice, "—");
  if (!ui.message.classList.contains("error")) show("Call ended.");
}

ui.startForm.addEventListener("submit", startCall);
ui.sayForm.addEventListener("submit", say);
ui.hangup.addEventListener("click", () => { show(""); hangUp(); });
window.addEventListener("pagehide", () => { hangUp(); });
