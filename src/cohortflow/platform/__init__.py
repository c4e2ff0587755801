"""The engagement platform (the Braze role): workspaces, partners, data import keys, users and identity,
the partner cohort import API, segments, campaigns and Canvas."""
