// Command vcsim runs govmomi's vCenter simulator (the VPX model: one datacenter, hosts, VMs,
// a datastore) over TLS on 127.0.0.1 for Sendense's tests. Debian packages the simulator but
// not its command. stdout: the SDK URL, then the SHA-1 thumbprint of the server certificate
// (AA:BB:...); logs on stderr. Runs until SIGTERM or SIGINT, then removes its datastore files.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	port := flag.Int("port", 0, "port on 127.0.0.1 (0: any free one)")
	user := flag.String("username", "user", "the account's name")
	pass := flag.String("password", "pass", "the account's password")
	flag.Parse()
	log.SetOutput(os.Stderr)

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatalf("creating the inventory: %v", err)
	}
	model.Service.Listen = &url.URL{
		Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)),
		User: url.UserPassword(*user, *pass),
	}
	// A certificate of its own per start (the simulator's built-in one has a 1024-bit RSA
	// key, which no current TLS library accepts).
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{certificate()}}
	server := model.Service.NewServer()

	sdk := *server.URL
	sdk.User = nil
	sum := sha1.Sum(server.Certificate().Raw)
	hex := make([]string, len(sum))
	for i, b := range sum {
		hex[i] = fmt.Sprintf("%02X", b)
	}
	fmt.Println(sdk.String())
	fmt.Println(strings.Join(hex, ":"))
	os.Stdout.Sync()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	// Not server.Close(): it waits for idle client connections.
	model.Remove()
	os.Exit(0)
}

// certificate makes a self-signed ECDSA P-256 certificate for 127.0.0.1.
func certificate() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatalf("generating a key: %v", err)
	}
	template := x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "vcsim", Organization: []string{"Sendense tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, &template, &key.PublicKey, key)
	if err != nil {
		log.Fatalf("making a certificate: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
