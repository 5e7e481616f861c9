#!/usr/bin/env bash
# reproduce.sh: train the bundled mini model from scratch, every stage of
# docs/TRAINING.md in order, and export it as weight files.
#
#   train/reproduce.sh                       # CPU, the recipe of weights/mini
#   DEVICE=cuda:0 SA=target/gpu-carry/streamavatar train/reproduce.sh
#
# Resumable: each stage checkpoints into $RUNS/<stage>/ and the script
# resumes it there; a stage that reached its step count does no new steps.
# Rerun the same command after an interruption.
#
# Environment:
#   SA          the streamavatar binary (default target/release/streamavatar)
#   RUNS        checkpoint root (default runs/mini)
#   OUT_WEIGHTS where the exported weight files go (default $RUNS/weights;
#               weights/mini is the bundled copy)
#   CONFIG      model preset (default mini; tests use tiny)
#   DEVICE      cpu | cuda:N (default cpu)
#   STEPS_DIV   divide every stage's step count (default 1; smoke runs)
#   MAX_MINUTES time box per invocation of a stage (default none): a stage
#               stopped short ends the script with exit code 3; rerun it.
#   DEADLINE    wall-clock end of the whole run (seconds since the epoch):
#               each stage gets at most the minutes left (a lent GPU).
#   ONLY        run only these stages (space-separated names below)
#   AUDIO_ENCODER=1  also pretrain the audio encoder (stage 0) and train
#               the DiT stages on it (off by default, see stage 0)
set -euo pipefail

SA=${SA:-target/release/streamavatar}
RUNS=${RUNS:-runs/mini}
OUT_WEIGHTS=${OUT_WEIGHTS:-$RUNS/weights}
CONFIG=${CONFIG:-mini}
DEVICE=${DEVICE:-cpu}
STEPS_DIV=${STEPS_DIV:-1}
ONLY=${ONLY:-}

mkdir -p "$RUNS"
log() { echo "reproduce: $(date -u +%FT%TZ) $*" >&2; }

steps() { # base count -> count for this run
    local n=$(($1 / STEPS_DIV))
    echo $((n > 0 ? n : 1))
}

saved_step() { # checkpoint folder -> its saved step (0 if none)
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["step"])' "$1/state.json" 2>/dev/null || echo 0
}

wanted() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

# stage NAME OUT_DIR TARGET_STEPS train-args...
stage() {
    local name=$1 dir=$2 target=$3
    shift 3
    wanted "$name" || return 0
    log "$name: to step $target in $dir"
    local start=$SECONDS budget=${MAX_MINUTES:-}
    if [ -n "${DEADLINE:-}" ]; then
        local left=$(((DEADLINE - $(date +%s)) / 60))
        if [ "$left" -le 0 ]; then
            log "$name: deadline reached before the stage: rerun to continue"
            exit 3
        fi
        if [ -z "$budget" ] || [ "$left" -lt "${budget%.*}" ]; then budget=$left; fi
    fi
    "$SA" train "$@" --config "$CONFIG" --device "$DEVICE" --out "$dir" --resume --steps "$target" \
        ${budget:+--max-minutes "$budget"}
    local reached
    reached=$(saved_step "$dir")
    log "$name: step $reached of $target ($((SECONDS - start)) s)"
    if [ "$reached" -lt "$target" ]; then
        log "$name stopped at step $reached of $target (time box): rerun to continue"
        exit 3
    fi
}

# start DIR FROM: a stage that continues from another stage's parameters
# begins as a copy of that checkpoint's parameters (fresh optimizer).
start_from() {
    local dir=$1 from=$2
    if [ ! -f "$dir/state.json" ]; then
        mkdir -p "$dir"
        cp "$from/params.safetensors" "$from/state.json" "$dir/"
    fi
}

# 0. Audio encoder (optional, AUDIO_ENCODER=1): the mini wav2vec2
#    pretrained as a phone recogniser on the synth talk tracks (espeak
#    timing -> articulation classes), then frozen for every DiT stage.
#    Off by default: after 1,500 steps its features carry *less* of the
#    mouth than the seeded random encoder's (train audio_probe, 16 held-out
#    clips: ridge read-out r 0.553 against 0.590; RMS alone 0.522; session
#    10). Without it the DiT stages use the seeded random encoder.
W2V=()
if [ "${AUDIO_ENCODER:-0}" = 1 ]; then
    AUDIO=$RUNS/audio_encoder
    stage audio_encoder "$AUDIO" "$(steps 2000)" audio_encoder --batch 4 --lr 3e-4 --save-every 250
    W2V=(--wav2vec2 "$AUDIO/params.safetensors")
fi

# 1. VAE, images first (the first latent frame of every clip; no KL: a KL
#    term erodes the chroma directions before the decoder reads them,
#    TRAINING.md session 4-5; the face-region term from the start: the eyes
#    and mouth are what the evaluation reads, session 8), then a lower
#    learning rate.
S_IMG=$(steps 5000)
S_IMG_FINE=$((S_IMG + $(steps 1500)))
VAE_IMG=$RUNS/vae_images
stage vae_images "$VAE_IMG" "$S_IMG" vae --latent-frames 0 --crop 64 --batch 4 --lr 1e-3 --kl-weight 0 \
    --face-weight 3 --save-every 250
stage vae_images "$VAE_IMG" "$S_IMG_FINE" vae --latent-frames 0 --crop 64 --batch 4 --lr 3e-4 --kl-weight 0 \
    --face-weight 3 --save-every 250

# 2. VAE, video: the temporal (4x) path, from the image VAE, with the
#    temporal term (frame-to-frame changes as in the clip: per-frame losses
#    let the 16x VAE flicker ~6x more than the clips move, which buried the
#    listening motion, session 9).
VAE=$RUNS/vae_video
S_VID=$((S_IMG_FINE + $(steps 1000)))
if wanted vae_video; then start_from "$VAE" "$VAE_IMG"; fi
stage vae_video "$VAE" "$S_VID" vae --latent-frames 2 --crop 64 --batch 2 --lr 3e-4 --kl-weight 0 \
    --face-weight 3 --temporal-weight 1 --save-every 250
#    The 9-frame clips teach the temporal path quickly (L1 0.15 -> 0.07 in
#    500 steps) but not the chunk boundary: the streaming decoder works in
#    chunks of 3 latent frames, and a VAE trained on shorter clips falls
#    apart after frame 9 (16-20 dB, TRAINING.md sessions 8-9). So most of
#    the video steps are on clips of 5 latent frames (21 video frames).
#    On these clips the temporal weight is 3, then 10: at 1 the flicker
#    fell too slowly (round-trip frame-change energy 4.3e-3 -> 3.4e-3 in
#    470 steps against ~7e-4 of real motion; the committed run used 1 for
#    its first 1,335 steps here), at 3 it fell to 2.3e-3 by step 10,500
#    with lip r 0.63 -> 0.69 and the same identity PSNR, yet the listening
#    ratio stayed 1.00 (session 10).
S_VID_T3=$((S_VID + $(steps 3000)))
stage vae_video "$VAE" "$S_VID_T3" vae --latent-frames 5 --crop 64 --batch 1 --lr 3e-4 --kl-weight 0 \
    --face-weight 3 --temporal-weight 3 --save-every 250
#    From step 14,000 of the committed run the clips are windows across
#    their conversation (`train/data.rs`; before, every clip was the
#    conversation's first second, which never shows a listening nod, and
#    the round trip damped nods ~4x, session 11), hence 1,000 more steps
#    here than the first plan.
S_VID_LONG=$((S_VID_T3 + $(steps 4000)))
stage vae_video "$VAE" "$S_VID_LONG" vae --latent-frames 5 --crop 64 --batch 1 --lr 3e-4 --kl-weight 0 \
    --face-weight 3 --temporal-weight 10 --save-every 250
#    The round trip still damped head nods (~4x less frame-to-frame
#    change than the clips during a nod, listening ratio 1.02 at step
#    14,500): over the whole frame a nod is a small share of the temporal
#    term, so it is repeated inside the face region, and the clips are the
#    windows with the most head motion among 8 (`--motion-windows`).
S_VID_MOTION=$((S_VID_LONG + $(steps 1000)))
stage vae_video "$VAE" "$S_VID_MOTION" vae --latent-frames 5 --crop 64 --batch 1 --lr 3e-4 --kl-weight 0 \
    --face-weight 3 --temporal-weight 10 --face-temporal-weight 3 --motion-windows --save-every 250
#    Then the decoder alone (`--freeze-encoder`): `examples/listening_trace.rs
#    --latents` showed the encoder's latents react to a nod in the same
#    latent frame, while the decoder's output lags and carries the nod on
#    for ~20 frames (session 11). The encoder, i.e. the latent space every
#    DiT stage learns, is final from here, and the DiT stages' clip pool
#    stays valid (it is keyed to the encoding tensors only).
S_VID_DECODER=$((S_VID_MOTION + $(steps 2000)))
stage vae_video "$VAE" "$S_VID_DECODER" vae --latent-frames 5 --crop 64 --batch 1 --lr 3e-4 --kl-weight 0 \
    --face-weight 3 --temporal-weight 10 --face-temporal-weight 10 --motion-windows --freeze-encoder --save-every 250
#    Then decoder steps on noisy latents (`--latent-noise 0.3`, normalised
#    units): a DiT's latents are off the encoder's, and the decoder's causal
#    cache grew those errors over the frames; 500 such steps took the
#    teacher's decoded samples from SSIM 0.701 to 0.793 (`train
#    teacher_check`, session 13) for -0.5 dB of the VAE's own round trip
#    and round-trip lip r 0.81 -> 0.73.
S_VID_ROBUST=$((S_VID_DECODER + $(steps 500)))
stage vae_video "$VAE" "$S_VID_ROBUST" vae --latent-frames 5 --crop 64 --batch 1 --lr 3e-4 --kl-weight 0 \
    --face-weight 3 --temporal-weight 10 --face-temporal-weight 10 --motion-windows --freeze-encoder \
    --latent-noise 0.3 --save-every 100
#    Then the mouth (`--mouth-weight`, session 15): until here the round
#    trip's mouth hardly moved (within clips its openness followed the
#    truth at r 0.32, the real clips at 0.95; `train teacher_check`'s
#    `lip_sync`), so no DiT on these latents could lip-sync. Encoder and
#    decoder train again (the latent space, hence the clip pool, changes),
#    mouth weight 10, then 30; every other crop holds the mouth box (the
#    committed run's first 500 steps here drew uniform crops: the mouth
#    crops came after). Then the decoder alone on noisy latents again.
S_VID_MOUTH=$((S_VID_ROBUST + $(steps 500)))
stage vae_video "$VAE" "$S_VID_MOUTH" vae --latent-frames 5 --crop 64 --batch 1 --lr 3e-4 --kl-weight 0 \
    --face-weight 3 --temporal-weight 10 --face-temporal-weight 10 --motion-windows --mouth-weight 10 --save-every 100
S_VID_MOUTH30=$((S_VID_MOUTH + $(steps 1000)))
stage vae_video "$VAE" "$S_VID_MOUTH30" vae --latent-frames 5 --crop 64 --batch 1 --lr 3e-4 --kl-weight 0 \
    --face-weight 3 --temporal-weight 10 --face-temporal-weight 10 --motion-windows --mouth-weight 30 --save-every 100
S_VID_MOUTH_ROBUST=$((S_VID_MOUTH30 + $(steps 500)))
stage vae_video "$VAE" "$S_VID_MOUTH_ROBUST" vae --latent-frames 5 --crop 64 --batch 1 --lr 3e-4 --kl-weight 0 \
    --face-weight 3 --temporal-weight 10 --face-temporal-weight 10 --motion-windows --mouth-weight 30 \
    --freeze-encoder --latent-noise 0.3 --save-every 100

# 3. Light decoder (the CPU default decoder) for the final VAE, with the
#    VAE's face-region and temporal terms (temporal weight 3, then 10) on
#    21-frame motion windows: it must follow head motion the VAE's own
#    decoder smooths away.
#    The folder is light_decoder_m since the VAE's mouth phases (session
#    16): the session-13 light decoder decoded the old latents. The third
#    phase weighs the mouth as the VAE's last phases do. (The committed
#    lineage warm-started light_decoder_m from the session-13 light decoder
#    at step 1,000 and trained 1,500 steps with the third phase's options;
#    a fresh run trains all three phases.)
LIGHT=$RUNS/light_decoder_m
S_LIGHT=$(steps 2000)
stage light_decoder "$LIGHT" "$S_LIGHT" light_decoder --vae "$VAE/params.safetensors" \
    --latent-frames 5 --crop 64 --batch 1 --lr 1e-3 --face-weight 3 --temporal-weight 3 --face-temporal-weight 1 \
    --motion-windows --save-every 250
stage light_decoder "$LIGHT" "$((S_LIGHT + $(steps 2000)))" light_decoder --vae "$VAE/params.safetensors" \
    --latent-frames 5 --crop 64 --batch 1 --lr 3e-4 --face-weight 3 --temporal-weight 10 --face-temporal-weight 3 \
    --motion-windows --save-every 250
stage light_decoder "$LIGHT" "$((S_LIGHT + $(steps 2000) + $(steps 1500)))" light_decoder --vae "$VAE/params.safetensors" \
    --latent-frames 5 --crop 64 --batch 1 --lr 3e-4 --face-weight 3 --temporal-weight 10 --face-temporal-weight 3 \
    --mouth-weight 30 --motion-windows --save-every 250

# The DiT stages train on one finite clip pool whose VAE latents and audio
# features are computed once and kept in $RUNS/samples_lf6m/
# (train/sample_store.rs): encoding a clip costs more than a mini DiT step.
# Clips of 6 latent frames (25 video frames) after the reference: two
# streaming chunks, so the teacher is trained on the length the student
# rolls out and ODE init reads teacher trajectories in distribution.
#    The pool's folder name changed with the mouth-trained VAE (session
#    15; its key refuses latents of another encoder with a clear error).
POOL6=(--clip-pool "$(steps 2000)" --sample-cache "$RUNS/samples_lf6m")

# 4. Bidirectional teacher (flow matching, talk and listen).
TEACHER=$RUNS/teacher
stage teacher "$TEACHER" "$(steps 12000)" teacher --vae "$VAE/params.safetensors" "${W2V[@]}" \
    --latent-frames 6 "${POOL6[@]}" --lr 3e-4 --save-every 250
#    Then a lower learning rate (`train teacher_check` on 8 unseen clips:
#    SSIM 0.58 at step 2,056, 0.698 at 12,000, 0.704 after these steps).
stage teacher "$TEACHER" "$(($(steps 12000) + $(steps 3000)))" teacher --vae "$VAE/params.safetensors" "${W2V[@]}" \
    --latent-frames 6 "${POOL6[@]}" --lr 1e-4 --save-every 500

# 4b. The mini DiT predicts the clean latent (`prediction: sample` in
#     ModelConfig::mini, session 14): its 1x4x4 patches hold 768 values
#     against a width of 192, so a velocity head cannot carry the input
#     noise through and the samples kept ~3/4 of it (x0 error at sigma 1:
#     0.87 -> 0.15 per latent value; teacher_check SSIM 0.793 -> 0.819).
#     Sessions 11-13 trained $TEACHER as a velocity predictor; these phases
#     start from it (from scratch it is a sample predictor already).
TEACHER_X=$RUNS/teacher_x0
stage teacher_x0 "$TEACHER_X" "$(steps 3000)" teacher --vae "$VAE/params.safetensors" "${W2V[@]}" \
    --latent-frames 6 "${POOL6[@]}" --lr 3e-4 --save-every 250 --init-from "$TEACHER/params.safetensors"
#     Then the audio branch afresh (the velocity teacher had collapsed its
#     audio projection, session 13), low noise levels trained too (the
#     sample head was worst there: x0 error 0.32 at sigma 0.1 -> 0.11) and
#     the mouth weighted 10x.
TEACHER_XA=$RUNS/teacher_x0a
stage teacher_x0a "$TEACHER_XA" "$(steps 2000)" teacher --vae "$VAE/params.safetensors" "${W2V[@]}" \
    --latent-frames 6 "${POOL6[@]}" --lr 3e-4 --save-every 250 --unshifted-sigma-share 0.3 --mouth-loss-weight 10 \
    --init-from "$TEACHER_X/params.safetensors" --init-skip audio,norm_talk,norm_listen
#     Then the latents of the mouth-trained VAE (session 15): the phases
#     above ran on the VAE before its mouth phases in the committed lineage
#     (from scratch they see the final VAE already, and this is 2,000 more
#     steps).
TEACHER_XM=$RUNS/teacher_x0m
stage teacher_x0m "$TEACHER_XM" "$(steps 2000)" teacher --vae "$VAE/params.safetensors" "${W2V[@]}" \
    --latent-frames 6 "${POOL6[@]}" --lr 3e-4 --save-every 250 --unshifted-sigma-share 0.3 --mouth-loss-weight 10 \
    --init-from "$TEACHER_XA/params.safetensors"
#     Then the lip-sync expert's loss (session 16, train/lip_expert.rs):
#     the flow-matching MSE alone left every teacher deaf (the mouth is a
#     few percent of its error, most of it head position). The expert, a
#     read-out of mouth openness from the latents around the synth's true
#     mouth position, is fit on the pool (1,500 steps of 8 clips; held-out
#     within-clip r 0.92), then scores the teacher's clean estimates.
LIPX=$RUNS/lip_expert
stage lip_expert "$LIPX" "$(steps 1500)" lip_expert --vae "$VAE/params.safetensors" "${W2V[@]}" \
    --latent-frames 6 "${POOL6[@]}" --batch 8 --lr 1e-3 --save-every 250
TEACHER_XL=$RUNS/teacher_x0l
stage teacher_x0l "$TEACHER_XL" "$(steps 1500)" teacher --vae "$VAE/params.safetensors" "${W2V[@]}" \
    --latent-frames 6 "${POOL6[@]}" --lr 3e-4 --save-every 250 --unshifted-sigma-share 0.3 --mouth-loss-weight 10 \
    --lip-expert "$LIPX/params.safetensors" --lip-sync-weight 10 --init-from "$TEACHER_XM/params.safetensors"
#     The head expert (session 17, train/head_expert.rs): the same kind of
#     read-out, of the head's pitch since the reference, from the latents
#     over the face at rest. The recipe fits it for `train teacher_check
#     --head-expert` (does the listen branch move the head?); a teacher
#     trained with its loss (`--head-expert --head-motion-expert-weight`,
#     1,500 steps from teacher_x0l, all frames at weight 10 or listening
#     frames only at 30) moved the head no differently with the partner's
#     audio than with silence (session-17 log in docs/TRAINING.md).
HEADX=$RUNS/head_expert
stage head_expert "$HEADX" "$(steps 4000)" head_expert --vae "$VAE/params.safetensors" "${W2V[@]}" \
    --latent-frames 6 "${POOL6[@]}" --batch 8 --lr 1e-3 --save-every 250
#     Then the listen lookback (session 18: `listen_lookback_frames: 3` in
#     ModelConfig::mini, a frame's listen attention also reads the 3 latent
#     frames before it, 0.5 s; the weights keep their shapes) with the head
#     expert's term on listening frames: listen_reaction 0.0087 -> 0.030.
TEACHER_XK=$RUNS/teacher_x0k
stage teacher_x0k "$TEACHER_XK" "$(steps 1500)" teacher --vae "$VAE/params.safetensors" "${W2V[@]}" \
    --latent-frames 6 "${POOL6[@]}" --lr 3e-4 --save-every 250 --unshifted-sigma-share 0.3 --mouth-loss-weight 10 \
    --lip-expert "$LIPX/params.safetensors" --lip-sync-weight 10 \
    --head-expert "$HEADX/params.safetensors" --head-motion-expert-weight 30 --init-from "$TEACHER_XL/params.safetensors"
#     Then 1,500 steps at lr 1e-4 on a second pool of 800 motion windows
#     (the clip windows where the head moves most; ~12 min to prepare):
#     listen_reaction 0.030 -> 0.041, SSIM 0.775 -> 0.805, lip expert r
#     0.664 -> 0.702 on the plain check clips (session-18 log).
POOL_MOTION=(--clip-pool "$(steps 800)" --sample-cache "$RUNS/samples_lf6mw" --motion-windows)
TEACHER_XKM=$RUNS/teacher_x0km
stage teacher_x0km "$TEACHER_XKM" "$(steps 1500)" teacher --vae "$VAE/params.safetensors" "${W2V[@]}" \
    --latent-frames 6 "${POOL_MOTION[@]}" --lr 1e-4 --save-every 250 --unshifted-sigma-share 0.3 --mouth-loss-weight 10 \
    --lip-expert "$LIPX/params.safetensors" --lip-sync-weight 10 \
    --head-expert "$HEADX/params.safetensors" --head-motion-expert-weight 30 --init-from "$TEACHER_XK/params.safetensors"
#     Then the listen contrast (session 19, train/listen_contrast.rs): the
#     head read-out of the clean estimate with the partner's audio minus
#     the one with silent listen tokens, against the synth's listening nods
#     (W 10, 1,500 steps on the plain pool), then 1,500 more at W 20 on a
#     pool of 800 listening windows (the windows whose nods follow a frame
#     of the partner's turn; ~12 min to prepare). teacher_check on
#     listening windows: listen_reaction 0.036 -> 0.117 (the truth's nods
#     0.128), reaction_r -0.09 -> 0.28; the students' listening ratio
#     1.03 -> 1.17 (session-19 log).
TEACHER_XC=$RUNS/teacher_x0c
stage teacher_x0c "$TEACHER_XC" "$(steps 1500)" teacher --vae "$VAE/params.safetensors" "${W2V[@]}" \
    --latent-frames 6 "${POOL6[@]}" --lr 1e-4 --save-every 250 --unshifted-sigma-share 0.3 --mouth-loss-weight 10 \
    --lip-expert "$LIPX/params.safetensors" --lip-sync-weight 10 \
    --head-expert "$HEADX/params.safetensors" --listen-contrast-weight 10 --init-from "$TEACHER_XKM/params.safetensors"
POOL_LISTEN=(--clip-pool "$(steps 800)" --sample-cache "$RUNS/samples_lf6ml" --listening-windows)
TEACHER_XCL=$RUNS/teacher_x0cl
stage teacher_x0cl "$TEACHER_XCL" "$(steps 1500)" teacher --vae "$VAE/params.safetensors" "${W2V[@]}" \
    --latent-frames 6 "${POOL_LISTEN[@]}" --lr 1e-4 --save-every 250 --unshifted-sigma-share 0.3 --mouth-loss-weight 10 \
    --lip-expert "$LIPX/params.safetensors" --lip-sync-weight 10 \
    --head-expert "$HEADX/params.safetensors" --listen-contrast-weight 20 --init-from "$TEACHER_XC/params.safetensors"
#     Then 500 steps at W 40 on the same pool: the students of this
#     teacher (DMD 600 from the ODE student of teacher_x0cl) are the first
#     to pass every threshold (listening 1.26; session-19 log).
TEACHER_XCL2=$RUNS/teacher_x0cl2
stage teacher_x0cl2 "$TEACHER_XCL2" "$(steps 500)" teacher --vae "$VAE/params.safetensors" "${W2V[@]}" \
    --latent-frames 6 "${POOL_LISTEN[@]}" --lr 1e-4 --save-every 250 --unshifted-sigma-share 0.3 --mouth-loss-weight 10 \
    --lip-expert "$LIPX/params.safetensors" --lip-sync-weight 10 \
    --head-expert "$HEADX/params.safetensors" --listen-contrast-weight 40 --init-from "$TEACHER_XCL/params.safetensors"
TEACHER=$TEACHER_XCL2

# 5. Causal student: ODE initialisation from teacher trajectories.
#    1,000 steps since session 14 (the sample-head teacher's trajectories;
#    the velocity-head student of session 12 took 2,000); from
#    teacher_x0cl's trajectories (session 19: the passing students' ODE
#    stage ran before teacher_x0cl2 existed).
ODE=$RUNS/ode_init
stage ode_init "$ODE" "$(steps 1000)" ode_init --vae "$VAE/params.safetensors" "${W2V[@]}" \
    --teacher "$TEACHER_XCL/params.safetensors" --latent-frames 6 "${POOL6[@]}" --substeps 8 --lr 1e-4 --save-every 100

# 6. DMD with student forcing (3 steps, reference sink, RAPR), on the
#    listening windows since session 19 (the teacher's listening reactions
#    are what the plain windows show least); 600 steps (session 19).
DMD=$RUNS/dmd
stage dmd "$DMD" "$(steps 600)" dmd --vae "$VAE/params.safetensors" "${W2V[@]}" --teacher "$TEACHER/params.safetensors" \
    --student "$ODE/params.safetensors" --latent-frames 6 "${POOL_LISTEN[@]}" --critic-updates 2 --lr 1e-5 --critic-lr 1e-5 --save-every 50

# 7. Adversarial refinement, consistency-aware discriminator.
GAN=$RUNS/gan
stage gan "$GAN" "$(steps 500)" gan --vae "$VAE/params.safetensors" "${W2V[@]}" --teacher "$TEACHER/params.safetensors" \
    --student "$DMD/params.safetensors" --latent-frames 6 "${POOL6[@]}" --lr 1e-5 --critic-lr 2e-5 --save-every 50

# 8. Export: dit, audio projection, vae, wav2vec2 (f16) + the light decoder.
if wanted export; then
    log "export -> $OUT_WEIGHTS"
    "$SA" train export --config "$CONFIG" --vae "$VAE/params.safetensors" "${W2V[@]}" --teacher "$GAN/params.safetensors" \
        --out "$OUT_WEIGHTS"
    cp "$LIGHT/params.safetensors" "$OUT_WEIGHTS/light_decoder.safetensors"
    "$SA" weights check --config "$CONFIG" "$OUT_WEIGHTS"/*.safetensors
    log "weights in $OUT_WEIGHTS"
fi
log "done ($SECONDS s)"
