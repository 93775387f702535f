# The transfer method's own stage (reuse.methods.transfer; included by the Snakefile for the
# registered method): the influence table of the source classes on the target, built once from every
# subset run's transfer outputs. The runs (subsets, full source, counterfactuals) and the studies come
# from the generic rules (rules/methods.smk); a counterfactual run that removes the most harmful or
# helpful classes reads this table.

_TRANSFER = method("transfer")

if _TRANSFER.declared(config) and list(_TRANSFER.variants(config)):
    _TRANSFER_FILES = _TRANSFER.influence_files(config)

    rule transfer_influence:
        input:
            unpack(lambda wc: under_results(_TRANSFER.influence_inputs(config))),
        output:
            table=f"{R}/{_TRANSFER_FILES['table']}",
            by_class=f"{R}/{_TRANSFER_FILES['by_class']}",
            meta=f"{R}/{_TRANSFER_FILES['meta']}",
        params:
            stage="reuse.methods.transfer.stage:influence_rule",
            using=config["transfer"]["influence"]["using"],
            metric=config["transfer"]["influence"]["metric"],
            resamples=config["transfer"]["influence"]["resamples"],
            confidence=config["report"]["confidence"],
        log:
            f"{R}/{_TRANSFER_FILES['table'].rsplit('/', 1)[0]}/influence.log",
        conda:
            "../../../envs/reuse.yaml"
        script:
            STAGE_SCRIPT
