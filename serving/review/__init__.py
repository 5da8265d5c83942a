"""The merchandisers\x27 review page (`pages`) and its sessions (`sessions`)."""
