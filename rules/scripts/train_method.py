from reuse.workflow import train_method

train_method(snakemake)
