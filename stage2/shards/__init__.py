"""The shard format (`format`) and the packer that writes it (`pack`); numpy is their only heavy import."""
