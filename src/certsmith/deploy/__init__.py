"""Taking a stored certificate to where it is served: deploy targets (files, reload, Alibaba Cloud) and the hook."""
