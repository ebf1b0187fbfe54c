"""The only package that talks to the Kubernetes API.

``credentials`` (the official client's loaders), ``client`` (async requests, typed errors), ``diff``
(what we own, compared as the server stores it) and ``apply`` (one create/update/repair shape per child).
"""
