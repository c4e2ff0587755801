"""``cohortflow demo``: the whole flow of the document on embedded defaults, end to end."""
