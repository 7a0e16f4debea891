# Sourced by the CLI script tests (cli_ml_test.sh, fixture_scripts.sh) after OUT is set:
# when the test passes, the weights it wrote (checkpoints and models, nearly all of its
# bytes: hundreds of MB a test) are deleted on exit; logs, reports and configs stay to be
# read. A failing test keeps everything.
# shellcheck shell=bash
drop_weights_on_success() {
  local rc=$?
  if [ "$rc" -eq 0 ]; then
    find "$OUT" -type f \( -name '*.pt' -o -name '*.pth' -o -name '*.safetensors' \) -delete
  fi
  return "$rc"
}
trap drop_weights_on_success EXIT
