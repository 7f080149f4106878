// Wrapper main for etcd's server: etcd's own go.mod has replace directives,
// so `go install go.etcd.io/etcd/server/v3` is refused; this module pins the
// etcd modules to one release and calls the same entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
