# The table of docs/cv/36ep_160_balmix_allbut: each round's model trained on every image
# but its test fold (the shipped model's procedure), scored on that fold at the operating
# point fitted on the other rounds' out-of-fold answers, paired with the same round in the
# leave-one-round-out check of the three-fold round models (same operating-point source,
# same test images: what differs is the training, 4,787 images and the last epoch against
# 3,590 images and the epoch the validation fold chose).
#   /usr/bin/python3 docs/cv/36ep_160_balmix_allbut/summary.py [THIS_DIR [LORO_JSON]]
# Writes THIS_DIR/summary.md and prints it.
import glob
import json
import os
import statistics
import sys

HERE = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
LORO = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
    HERE, '..', '36ep_160_balmix_oof', 'leave_one_round_out_flips.json')

# (header, key in the evaluate metrics, key in the leave-one-round-out rounds)
COLUMNS = [
    ('balanced accuracy', 'balanced_accuracy', 'balanced_accuracy'),
    ('macro AUC', 'macro_auc', 'macro_auc'),
    ('melanoma recall', 'melanoma_recall', 'melanoma_recall'),
    ('accuracy', 'accuracy', 'accuracy'),
    ('referral malignant sens.', 'referral/malignant_sensitivity/value', 'referral/malignant_sensitivity/value'),
    ('refer rate', 'referral/refer_rate/value', 'referral/refer_rate/value'),
]


def get(metrics, path):
    v = metrics
    for part in path.split('/'):
        v = v[part]
    return float(v)


def mean_sd(xs):
    if not xs:
        return '–'
    if len(xs) == 1:
        return f'{xs[0]:.4f}'
    return f'{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}'


def train_minutes(fold_dir):
    log = os.path.join(fold_dir, 'train_log.jsonl')
    if not os.path.exists(log):
        return None
    seconds = [json.loads(line).get('seconds') for line in open(log) if line.strip()]
    seconds = [s for s in seconds if s is not None]
    return sum(seconds) / 60, statistics.median(seconds) if seconds else None


def main():
    loro = {r['fold']: r for r in json.load(open(LORO))['rounds']}
    files = sorted(glob.glob(os.path.join(HERE, 'fold*_metrics.json')))
    if not files:
        sys.exit(f'no fold*_metrics.json in {HERE}')
    lines = ['| round | n | model | ' + ' | '.join(c[0] for c in COLUMNS) + ' | training |',
             '|---:|---:|---|' + '---:|' * len(COLUMNS) + '---|']
    ours = {c[0]: [] for c in COLUMNS}
    theirs = {c[0]: [] for c in COLUMNS}
    diffs = {c[0]: [] for c in COLUMNS}
    for path in files:
        fold = int(os.path.basename(path)[len('fold'):-len('_metrics.json')])
        m = json.load(open(path))
        minutes = train_minutes(os.path.join(HERE, f'fold{fold}'))
        cost = f'{minutes[0]:.1f} min (median epoch {minutes[1]:.0f} s)' if minutes else '–'
        row = [get(m, c[1]) for c in COLUMNS]
        lines.append(f'| {fold} | {m["n"]} | every image but this fold, last epoch | ' +
                     ' | '.join(f'{v:.4f}' for v in row) + f' | {cost} |')
        for c, v in zip(COLUMNS, row):
            ours[c[0]].append(v)
        if fold in loro:
            other = [float(loro[fold][c[2]]) for c in COLUMNS]
            if loro[fold]['n'] != m['n']:
                sys.exit(f'round {fold}: {m["n"]} test images here, {loro[fold]["n"]} in {LORO}')
            lines.append(f'| {fold} | {loro[fold]["n"]} | three folds, the validation fold\'s epoch | ' +
                         ' | '.join(f'{v:.4f}' for v in other) + ' | |')
            for c, a, b in zip(COLUMNS, row, other):
                theirs[c[0]].append(b)
                diffs[c[0]].append(a - b)
    n = len(files)
    lines.append(f'| mean ± sd ({n}) | | every image but the fold | ' +
                 ' | '.join(f'**{mean_sd(ours[c[0]])}**' for c in COLUMNS) + ' | |')
    if all(theirs[c[0]] for c in COLUMNS):
        lines.append(f'| mean ± sd ({len(theirs[COLUMNS[0][0]])}) | | three folds (same rounds) | ' +
                     ' | '.join(mean_sd(theirs[c[0]]) for c in COLUMNS) + ' | |')
        lines.append('| paired difference | | | ' +
                     ' | '.join(f'{statistics.mean(diffs[c[0]]):+.4f}' for c in COLUMNS) + ' | |')
    text = '\n'.join(lines) + '\n'
    with open(os.path.join(HERE, 'summary.md'), 'w') as f:
        f.write(text)
    print(text, end='')


if __name__ == '__main__':
    main()
