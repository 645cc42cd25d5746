# Relational-skew study (Chang et al. 2024): icon datasets, split families and their audit.
# Owned by the relational work (issue 5); until it lands the study contributes no targets.


def relational_targets():
    return []
