"""charfeat's Hydra config root; installed as the package ``charfeat.conf``."""
