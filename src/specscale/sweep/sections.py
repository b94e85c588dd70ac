"""The top-level sections of a sweep config that belong to the workflow, not to the package
(``specscale.core.config.PACKAGE_SECTIONS``): a command that reads a whole sweep config passes
them to ``load_config(path, also=WORKFLOW_SECTIONS)``. ``workflow/schemas/config.schema.yaml``
describes and validates them."""

WORKFLOW_SECTIONS = (
    "datasets",
    "grid",
    "exclude",
    "resources",
    "results",
    "report",
    "sweep",
    "hypotheses",
    "pretrain",
)
