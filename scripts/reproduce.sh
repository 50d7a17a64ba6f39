#!/usr/bin/env bash
# The command behind every committed table under results/. One comment line per study
# (what it shows -> where its table lives), then the command. Keep in sync with results/.
#
#   scripts/reproduce.sh            list the commands
#   scripts/reproduce.sh --run      run them all (long), then rebuild every table
#   scripts/reproduce.sh --check    fail if a committed table has no command here
set -euo pipefail
cd "$(dirname "$0")/.."

COMMANDS=(
  # demo: PPO on PreorderedShortcut, weighted-sum vs lexicographic view -> results/demo/quick/table.md
  "python -m experiments.demo --preset quick"
  # driving_pr_iqn: Pr-IQN vs IQN vs ensemble-IQN on the JAX driving sim -> results/driving_pr_iqn/quick/table.md
  "python -m experiments.driving_pr_iqn --preset quick"
  # carl_minibatch: PPO with CaRL vs Roach reward across mini-batch sizes -> results/carl_minibatch/quick/table.md
  "python -m experiments.carl_minibatch --preset quick"
  # carl_minibatch medium: rollout batch 16,384, mini-batch 256..16,384, 2M steps/seed -> results/carl_minibatch/medium/table.md
  "python -m experiments.carl_minibatch --preset medium"
  # carl_minibatch long: medium's setting at mini-batch 256 and 16,384, 3x the steps (5.9M/seed) -> results/carl_minibatch/long/table.md
  "python -m experiments.carl_minibatch --preset medium --name long --minibatch-sizes 256 16384 --agent.total-timesteps 5898240"
  # coopetition: IPPO under private / integrated / cooperative rewards on the coopetition games -> results/coopetition/quick/table.md
  "python -m experiments.coopetition_ablation --preset quick"
  # heron: HERON vs tuned weighted sums vs RLHF, PPO on Pendulum (3 factor scales) and the driving sim -> results/heron/{pendulum,driving}/table.md
  "python -m experiments.heron --preset pendulum --no-progress"
  "python -m experiments.heron --preset driving --no-progress"
)
TABLES=(
  "results/demo/quick"
  "results/driving_pr_iqn/quick"
  "results/carl_minibatch/quick"
  "results/carl_minibatch/medium"
  "results/carl_minibatch/long"
  "results/coopetition/quick"
  "results/heron"
)

case "${1:-}" in
  --run)
    for c in "${COMMANDS[@]}"; do echo "+ $c"; eval "$c"; done
    python scripts/make_tables.py
    ;;
  --check)
    python scripts/make_tables.py --check >/dev/null || { echo "a table differs from its metrics"; exit 1; }
    missing=0
    while IFS= read -r t; do
      d=$(dirname "$t")
      covered=0
      for k in "${TABLES[@]}"; do [[ "$d" == "$k" || "$d" == "$k"/* ]] && covered=1; done
      if [[ $covered == 0 ]]; then echo "no command for committed table $t"; missing=1; fi
    done < <(git ls-files 'results/*table.md')
    exit $missing
    ;;
  *)
    awk '/^COMMANDS=\(/{on=1; next} on && /^\)/{exit} on' "$0" | sed -e 's/^  //' -e 's/^"//' -e 's/"$//'
    ;;
esac
