#!/usr/bin/env bash
# Keep the working tree the device tool copies under its 64 MiB limit.
#
# The device tool carries every tracked file (plus `carry`); the committed
# mini-model checkpoints (train/checkpoints/mini, ~62 MB) and the carried
# CUDA build (~25 MB) together exceed 64 MiB. The GPU checks do not need the
# checkpoints, so before a `run` hide them from git's index (the files stay
# on disk, untouched) and restore the index right after:
#
#   deploy/cuda/slim-tree.sh hide      # before run(...)
#   deploy/cuda/slim-tree.sh restore   # after it (also safe to run twice)
#
# `hide` drops the folder from the index (`git rm --cached`) and lists it in
# .git/info/exclude so it is neither tracked nor untracked-not-ignored;
# `restore` puts the index entries back from HEAD and removes the exclude
# line. Never commit between the two: the commit would delete the
# checkpoints from the repository. (`train-mini` on the GPU does not need
# them either: it resumes from the carried train/gpu-runs.tar.)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
dir=${SLIM_DIR:-train/checkpoints/mini}
exclude=.git/info/exclude
case ${1:-} in
    hide)
        if git ls-files --error-unmatch "$dir" >/dev/null 2>&1; then
            git rm -r --cached -q "$dir"
        fi
        grep -qxF "$dir/" "$exclude" 2>/dev/null || echo "$dir/" >> "$exclude"
        echo "slim-tree: $dir hidden from the index; tracked size now $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) bytes"
        ;;
    restore)
        git reset -q HEAD -- "$dir"
        if [ -f "$exclude" ]; then
            grep -vxF "$dir/" "$exclude" > "$exclude.tmp" || true
            mv "$exclude.tmp" "$exclude"
        fi
        git diff --cached --quiet -- "$dir" && echo "slim-tree: $dir back in the index"
        ;;
    *) echo "usage: $0 hide|restore" >&2; exit 2 ;;
esac
