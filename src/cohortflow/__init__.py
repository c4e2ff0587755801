"""cohortflow: keep cohorts in an engagement platform equal to warehouse queries.

Two sides live in one package:

- :mod:`cohortflow.platform` -- the engagement platform (the Braze role);
- :mod:`cohortflow.sync` -- the reverse-ETL sync tool (the Hightouch role);
- :mod:`cohortflow.wire` -- the partner cohort import contract both sides share.
"""

__version__ = "0.1.0"
