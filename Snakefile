# reuse: a benchmark of reusing past training runs.
#
# Every experiment is a file target. Path grammar (R = config["results"], default results/):
#   R/{dataset}/data/data.npz, dataset.json          prepared splits + fingerprints   (rules/data.smk)
#   R/{dataset}/{model}/baseline/s{seed}/             one baseline run               (rules/baseline.smk)
#       ckpt/e{epoch}.pt                              checkpoints at configured epochs (+ the final one)
#       ckpt/e{rounds}.txt                            a gbdt tree model's one model (LightGBM text format)
#       metrics.jsonl, run.json, predictions.npz      per-epoch metrics, run summary, test logits
#       logits/e{epoch}/logits.npy, meta.json         logit cache on every training example
#       state/                                        resume state while training (removed when done)
#       example_stats.npz                             per-epoch correctness and loss of every example
#       scores.npz, scores.json                       the run's difficulty scores     (rules/scores.smk)
#   R/{dataset}/{model}/baseline/b{budget}/s{seed}/   the baseline at another budget of baseline.budgets
#                                                     (b0.25, b0.5, b2: multiples of the recipe's epochs;
#                                                     network models): ckpt/last.pt, metrics.jsonl,
#                                                     run.json, predictions.npz    (rules/baseline.smk)
#   R/{dataset}/scores.parquet, scores.json           scores averaged over past runs  (rules/scores.smk)
#   R/{dataset}/{model}/{method}/{variant}/s{seed}/   one run of a registered method (rules/methods.smk):
#                                                     kd, prune, curriculum, reweight, adv, warm, soup,
#                                                     averaging, and any plugin's; the same run files
#   R/{dataset}/adv/{cache}/adv.npz, meta.json        adversarial examples made once against past runs
#                                                     (reuse/methods/adversarial/rules.smk)
#   R/{dataset}/{model}/.../s{seed}/robust.json       robust accuracy (PGD against the run's own model)
#   R/{dataset}/baselines.csv, kd.csv, prune.csv...   one row per run, per method     (rules/methods.smk)
#   R/{dataset}/studies/*.csv                         each method's study (prune, curriculum, adv, ...;
#                                                     warm.csv: warm starts, soups, averaging vs baseline)
#                                                     and the score-agreement study
#   R/summary.parquet, summary.csv                    every run and method aggregate  (rules/report.smk)
#   R/report/index.html, ..., figures/*.png|svg       the offline report pages and key figures
# Logs sit next to their outputs (*.log).
#
#   snakemake --cores all                          # the default benchmark (config.yaml, MNIST-1D)
#   snakemake --cores all --configfile configs/cifar100.yaml
#   snakemake -n                                   # show the DAG without running anything

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless --configfile names another config (which then replaces it whole,
# rather than being merged into it).
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/baseline.smk"
include: "rules/scores.smk"
include: "rules/methods.smk"


# The registered methods' own stages (e.g. an adversarial cache built once), from their folders.
for _rules in dict.fromkeys(m.rules for m in METHODS if m.rules is not None):

    include: str(_rules)


include: "rules/report.smk"


rule all:
    default_target: True
    input:
        baseline_targets(),
        summary_targets(),
        rules.report.output,
