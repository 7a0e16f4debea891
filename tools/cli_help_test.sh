#!/usr/bin/env bash
# `skinlesion <command> --help` prints that command's own flags with their defaults
# (exit 0), for every command; a flag of another command is refused (exit 2).
#   cli_help_test.sh path/to/skinlesion
set -euo pipefail
CLI=$1
fail() { echo "FAIL: $*" >&2; exit 1; }

top=$("$CLI" --help 2>&1) || fail "skinlesion --help exited $?"
grep -q "skinlesion <command> --help" <<<"$top" || fail "top-level help does not point at per-command help"
commands=$(sed -n 's/^  \([a-z-]*\)  .*/\1/p' <<<"$top")
[ "$(wc -w <<<"$commands")" -ge 12 ] || fail "expected the command list, got: $commands"
for c in $commands; do
  out=$("$CLI" "$c" --help) || fail "skinlesion $c --help exited $?"
  grep -q "^usage: skinlesion $c" <<<"$out" || fail "$c: no usage line"
done

train=$("$CLI" train --help)
for f in --data --out --config --set --split --device --resume --progress_jsonl; do
  grep -q -- "^  $f\$" <<<"$train" || fail "train --help lacks $f"
done
grep -q -- "(default: auto)" <<<"$train" || fail "train --help lacks --device's default"
! grep -q -- "--partition" <<<"$train" || fail "train --help shows evaluate's --partition"
predict=$("$CLI" predict -h)
grep -q -- "^  --explain_out\$" <<<"$predict" || fail "predict -h lacks --explain_out"
grep -q -- "(default: 2)" <<<"$predict" || fail "predict -h lacks --threads' default"

set +e
msg=$("$CLI" predict --partition=val x.jpg 2>&1); rc=$?
set -e
[ "$rc" -eq 2 ] || fail "predict --partition: exit $rc, want 2"
grep -q -- "--partition does not apply to this command" <<<"$msg" || fail "predict --partition: $msg"
set +e
msg=$("$CLI" split --noresume 2>&1); rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q -- "--resume does not apply" <<<"$msg" || fail "split --noresume: $rc $msg"
echo "cli help: ok"
