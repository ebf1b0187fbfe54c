"""ModelService operator: ModelService resources -> Deployments, Services, HPAs and PDBs, with Kopf."""

__version__ = "0.1.0"
GROUP = "serving.modelservice.io"
VERSION = "v1alpha1"
PLURAL = "modelservices"
KIND = "ModelService"
API_VERSION = f"{GROUP}/{VERSION}"
