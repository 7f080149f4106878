{{/*
  The operator's rules (rbac.yaml): one ClusterRole, or the same in a Role
  per watched namespace.
*/}}
{{- define "landfall.operatorRules" -}}
rules:
  # Informers on Endpoints and Views: list, then watch.
  - apiGroups: [landfall.dev]
    resources: [endpoints, views]
    verbs: [list, watch]
  # The landfall.dev/drain finalizer: JSON patches that add and remove it; and
  # the landfall.dev/wal-claims annotation (merge patch): which claims the
  # finalizer saw drained, or deleted undrained.
  - apiGroups: [landfall.dev]
    resources: [endpoints]
    verbs: [patch]
  # Status: server-side apply on the /status subresource.
  - apiGroups: [landfall.dev]
    resources: [endpoints/status, views/status]
    verbs: [patch]
  # Children carry an owner reference with blockOwnerDeletion: true; clusters
  # running the OwnerReferencesPermissionEnforcement admission plugin require this.
  - apiGroups: [landfall.dev]
    resources: [endpoints/finalizers]
    verbs: [update]
  # Children, server-side applied: an apply is a patch, and an apply that
  # creates the object is also authorized as create. get: the operator reads
  # each first and applies only over one its owner (the Endpoint, or a drainer's
  # claim) controls; a same-named object of someone else's is left untouched.
  # (A restarted operator also reads an Endpoint's views ConfigMap, its last
  # good output, to keep serving a View whose current generation does not compile.)
  - apiGroups: [""]
    resources: [serviceaccounts, configmaps, services]
    verbs: [get, create, patch]
  # The Endpoint's PDB, and one per drainer Job (owned by its claim).
  - apiGroups: [policy]
    resources: [poddisruptionbudgets]
    verbs: [get, create, patch]
  # spec.expose: the Ingress and the Gateway API HTTPRoute, applied when asked
  # for and deleted when the Endpoint no longer asks for them. get: the operator
  # reads the object first and touches it only if the Endpoint owns it (a
  # same-named one made by hand is left alone).
  - apiGroups: [networking.k8s.io]
    resources: [ingresses]
    verbs: [get, create, patch, delete]
  # One NetworkPolicy per Endpoint (networkPolicy.enabled); with it off the
  # operator deletes the ones it made, so the verbs are needed either way.
  - apiGroups: [networking.k8s.io]
    resources: [networkpolicies]
    verbs: [get, create, patch, delete]
  - apiGroups: [gateway.networking.k8s.io]
    resources: [httproutes]
    verbs: [get, create, patch, delete]
  # StatefulSets: applied, and watched (label-selected informer) for status.
  # get: the ownership check before the apply reads the object live (a
  # same-named one without our labels is not in the informer's cache).
  - apiGroups: [apps]
    resources: [statefulsets]
    verbs: [get, list, watch, create, patch]
  # Pod readiness for the Endpoint status and pod IPs for the drain check.
  - apiGroups: [""]
    resources: [pods]
    verbs: [list, watch]
  # The drain check on deletion lists the StatefulSet's volume claims, and so does
  # every StatefulSet apply (claims of a deleted namesake are never adopted).
  # delete: a claim of the Endpoint's uid whose drainer Job succeeded (nothing
  # undelivered left on it), with the claim's uid as precondition.
  - apiGroups: [""]
    resources: [persistentvolumeclaims]
    verbs: [list, delete]
  # Drainer Jobs (a volume without a pod: `landfall drain` on its node),
  # listed by label on each poll. delete: a Job that succeeded, when its claim
  # is deleted (its finished pod would keep the claim in pvc-protection), or a
  # finished Job (succeeded or failed, no pod alive) whose ordinal a scale-up
  # wants again. The pods of a failed Job are listed live (pods: list, below).
  - apiGroups: [batch]
    resources: [jobs]
    verbs: [create, list, delete]
  # Before starting a drainer the operator reads the claim's pod live (not
  # from its cache): no pod may still run on the volume.
  - apiGroups: [""]
    resources: [pods]
    verbs: [get]
  {{- if .Values.nodeDrain.enabled }}
  # Node drains: a replica on a cordoned node, once drained, loses its claim
  # and then its pod (uid preconditions) so it comes back elsewhere on a new
  # volume. get: the claim's uid for the precondition.
  - apiGroups: [""]
    resources: [persistentvolumeclaims]
    verbs: [get]
  - apiGroups: [""]
    resources: [pods]
    verbs: [delete]
  {{- end }}
  # Events on Endpoints and Views (Created, ConfigChanged, Draining, ...).
  - apiGroups: [""]
    resources: [events]
    verbs: [create]
{{- end }}
