"""vDAGs: pipelines of blocks routed stage to stage, peer to peer (docs/vdag.md)."""
