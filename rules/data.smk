# Prepared datasets: one file target per dataset, with its fingerprint.


rule prepare_data:
    output:
        npz=f"{R}/{{dataset}}/data/data.npz",
        meta=f"{R}/{{dataset}}/data/dataset.json",
    params:
        spec=lambda wc: config["datasets"][wc.dataset],
    log:
        f"{R}/{{dataset}}/data/prepare.log",
    threads: 1
    conda:
        "../envs/reuse.yaml"
    script:
        "scripts/prepare_data.py"
