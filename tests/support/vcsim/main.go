// Command vcsim runs govmomi's vCenter simulator (the VPX model: one datacenter, hosts, VMs,
// a datastore) over TLS on 127.0.0.1 for Sendense's tests. Debian packages the simulator but
// not its command. stdout: the SDK URL, then the SHA-1 thumbprint of the server certificate
// (AA:BB:...); logs on stderr. Runs until SIGTERM or SIGINT, then removes its datastore files.
package main

import (
	"context"
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

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func main() {
	port := flag.Int("port", 0, "port on 127.0.0.1 (0: any free one)")
	user := flag.String("username", "user", "the account's name")
	pass := flag.String("password", "pass", "the account's password")
	realistic := flag.Bool("layout", false, "give DC0_H0_VM0 vSphere's own device layout: "+
		"disks 2000 and 2001 on SCSI controller 1000 (bus 0), 2016 on controller 1001 (bus 1)")
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

	if *realistic {
		if err := layout(server.URL); err != nil {
			log.Fatalf("laying out DC0_H0_VM0: %v", err)
		}
	}
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

// layout replaces DC0_H0_VM0's devices (the simulator gives its disk a random key) with the
// layout vSphere makes: controller keys 1000 and 1001, disk keys 2000 + 16 * bus + unit, each
// disk with a backing uuid of its own.
func layout(u *url.URL) error {
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		return err
	}
	finder := find.NewFinder(c.Client, true)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return err
	}
	finder.SetDatacenter(dc)
	vm, err := finder.VirtualMachine(ctx, "DC0_H0_VM0")
	if err != nil {
		return err
	}
	devices, err := vm.Device(ctx)
	if err != nil {
		return err
	}
	var change []types.BaseVirtualDeviceConfigSpec
	for _, d := range devices {
		switch d.(type) {
		case *types.VirtualDisk, *types.VirtualCdrom, types.BaseVirtualSCSIController:
			change = append(change, &types.VirtualDeviceConfigSpec{
				Operation: types.VirtualDeviceConfigSpecOperationRemove, Device: d})
		}
	}
	controller := func(key, bus int32, d types.BaseVirtualDevice) types.BaseVirtualDeviceConfigSpec {
		c := d.(types.BaseVirtualSCSIController).GetVirtualSCSIController()
		c.Key = key
		c.BusNumber = bus
		c.SharedBus = types.VirtualSCSISharingNoSharing
		return &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: d}
	}
	change = append(change,
		controller(1000, 0, &types.ParaVirtualSCSIController{}),
		controller(1001, 1, &types.VirtualLsiLogicController{}))
	for _, d := range []struct {
		key, controller, unit int32
		mib                   int64
	}{{2000, 1000, 0, 64}, {2001, 1000, 1, 32}, {2016, 1001, 0, 16}} {
		unit := d.unit
		disk := &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           d.key,
				ControllerKey: d.controller,
				UnitNumber:    &unit,
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
						FileName: fmt.Sprintf("[LocalDS_0] DC0_H0_VM0/disk-%d.vmdk", d.key),
					},
					DiskMode:        string(types.VirtualDiskModePersistent),
					ThinProvisioned: types.NewBool(true),
					Uuid:            fmt.Sprintf("6000C29a-0b1c-2d3e-4f50-61728394%04d", d.key),
				},
			},
			CapacityInKB:    d.mib << 10,
			CapacityInBytes: d.mib << 20,
		}
		change = append(change, &types.VirtualDeviceConfigSpec{
			Operation:     types.VirtualDeviceConfigSpecOperationAdd,
			FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate,
			Device:        disk,
		})
	}
	task, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{DeviceChange: change})
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}
