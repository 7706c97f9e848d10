#!/usr/bin/env bash
# Runs the workshop lessons (docs/lessons) as a reader would and checks that every command still
# works, that its output still looks like what the lesson shows, and that every path, module and
# link the lessons name is right (tests/lessons; the format is in docs/lessons/README.md).
#
# Usage: scripts/check-lessons.sh [--static] [--parallel] [LESSON...]
#   scripts/check-lessons.sh          every lesson, in order (part of scripts/test.sh)
#   scripts/check-lessons.sh 1 4      lessons 1 and 4
#   scripts/check-lessons.sh --parallel  the lessons in their own network namespace beside the
#                                        others, two at a time (scripts/test.sh)
#   scripts/check-lessons.sh --static only the paths, modules, answers and links
#
# Lessons 2, 3 and 5 need a running Docker engine and the images of scripts/build-images.sh
# (lesson 2 builds them); lessons with `<!-- lesson: own-network -->` need root (unshare --net).
# Logs: target/lessons/<lesson>/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked -p lesson-check
exec "${CARGO_TARGET_DIR:-target}/debug/lesson-check" "$@"
