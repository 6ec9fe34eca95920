//! A throwaway kube-apiserver + etcd + kube-controller-manager (the envtest pattern).
