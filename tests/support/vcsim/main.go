// Command vcsim runs govmomi's vCenter simulator (the VPX model: one datacenter, hosts, VMs,
// a datastore) over TLS on 127.0.0.1 (or -address) for Sendense's tests. Debian packages the simulator but
// not its command. stdout: the SDK URL, then the SHA-1 thumbprint of the server certificate
// (AA:BB:...); logs on stderr. Runs until SIGTERM or SIGINT, then removes its datastore files.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func main() {
	address := flag.String("address", "127.0.0.1", "the address to listen on (a test's own)")
	port := flag.Int("port", 0, "port (0: any free one)")
	user := flag.String("username", "user", "the account's name")
	pass := flag.String("password", "pass", "the account's password")
	datastores := flag.String("cbt", "", "answer changed block tracking (a stand-in for VMware's CBT) "+
		"from the raw disk files under this directory (the VDDK stand-in's datastores)")
	realistic := flag.Bool("layout", false, "give DC0_H0_VM0 vSphere's own device layout: "+
		"disks 2000 and 2001 on SCSI controller 1000 (bus 0), 2016 on controller 1001 (bus 1), "+
		"and 2002, independent, on controller 1000")
	foreign := flag.String("snapshot", "", "snapshots of DC0_H0_VM0 of someone else's, with these names (comma-separated)")
	flag.Parse()
	log.SetOutput(os.Stderr)

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatalf("creating the inventory: %v", err)
	}
	model.Service.Listen = &url.URL{
		Host: net.JoinHostPort(*address, strconv.Itoa(*port)),
		User: url.UserPassword(*user, *pass),
	}
	// A certificate of its own per start (the simulator's built-in one has a 1024-bit RSA
	// key, which no current TLS library accepts).
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{certificate(*address)}}
	server := model.Service.NewServer()

	if *datastores != "" {
		c := &cbt{datastores: *datastores, ids: map[string]string{}, snaps: map[string]map[int32]string{}}
		inner := server.Config.Handler
		server.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c.serve(inner, w, r)
		})
	}
	if *realistic {
		if err := layout(server.URL); err != nil {
			log.Fatalf("laying out DC0_H0_VM0: %v", err)
		}
	}
	if *foreign != "" {
		for _, name := range strings.Split(*foreign, ",") {
			if err := snapshot(server.URL, name); err != nil {
				log.Fatalf("snapshot %s of DC0_H0_VM0: %v", name, err)
			}
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

// certificate makes a self-signed ECDSA P-256 certificate for address.
func certificate(address string) tls.Certificate {
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
		IPAddresses:  []net.IP{net.ParseIP(address)},
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
	vm, err := vm0(ctx, u)
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
		mode                  types.VirtualDiskMode
	}{
		{2000, 1000, 0, 64, types.VirtualDiskModePersistent},
		{2001, 1000, 1, 32, types.VirtualDiskModePersistent},
		{2016, 1001, 0, 16, types.VirtualDiskModePersistent},
		// Not in snapshots: Sendense leaves it out.
		{2002, 1000, 2, 8, types.VirtualDiskModeIndependent_persistent},
	} {
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
					DiskMode:        string(d.mode),
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

// cbt is a stand-in for VMware's changed block tracking, which the simulator lacks. When a
// snapshot is taken, each disk's raw file (the VDDK stand-in serves the same files) is copied
// aside under a new change id, which the snapshot's disk reports; QueryChangedDiskAreas compares
// the snapshot's copy with the copy of the change id asked about, 64 KiB at a time, and answers
// pages of at most four areas. A change id whose copy is gone is a FileFault (as VMware answers
// after a CBT reset). While the file `fail-quiesce` exists in the datastores directory, quiesced
// snapshots fail with ApplicationQuiesceFault.
type cbt struct {
	mu         sync.Mutex
	datastores string
	gen        int
	ids        map[string]string           // change id -> copy of the disk at that instant
	snaps      map[string]map[int32]string // snapshot -> disk key -> change id
}

const block = 64 << 10

// path maps "[ds] dir/file.vmdk" to its raw file.
func (c *cbt) path(file string) string {
	end := strings.Index(file, "] ")
	if !strings.HasPrefix(file, "[") || end < 0 {
		return ""
	}
	return filepath.Join(c.datastores, file[1:end], file[end+2:])
}

func (c *cbt) serve(inner http.Handler, w http.ResponseWriter, r *http.Request) {
	body, _ := ioutil.ReadAll(r.Body)
	text := string(body)
	r.Body = ioutil.NopCloser(bytes.NewReader(body))
	switch {
	case strings.Contains(text, "<QueryChangedDiskAreas"):
		c.query(w, text)
	case strings.Contains(text, "<CreateSnapshot_Task") && strings.Contains(text, "<quiesce>true</quiesce>") &&
		exists(filepath.Join(c.datastores, "fail-quiesce")):
		c.failQuiesce(w, text)
	case strings.Contains(text, "<CreateSnapshot_Task"):
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, r)
		c.snapshotTaken(rec.Body.String())
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		io.Copy(w, rec.Body)
	default:
		inner.ServeHTTP(w, r)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// snapshotTaken copies the disks of the snapshot the answer's task made and gives them change ids.
func (c *cbt) snapshotTaken(answer string) {
	var env struct {
		Task string `xml:"Body>CreateSnapshot_TaskResponse>returnval"`
	}
	if xml.Unmarshal([]byte(answer), &env) != nil {
		return
	}
	task, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "Task", Value: env.Task}).(*simulator.Task)
	if !ok || task.Info.Result == nil {
		return
	}
	ref, ok := task.Info.Result.(types.ManagedObjectReference)
	if !ok {
		return
	}
	snap, ok := simulator.Map.Get(ref).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	// The snapshot's devices are the VM's own in the simulator: the snapshot gets copies.
	devices := make([]types.BaseVirtualDevice, 0, len(snap.Config.Hardware.Device))
	keys := map[int32]string{}
	for _, d := range snap.Config.Hardware.Device {
		disk, isDisk := d.(*types.VirtualDisk)
		if !isDisk {
			devices = append(devices, d)
			continue
		}
		backing, flat := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !flat {
			devices = append(devices, d)
			continue
		}
		file := c.path(backing.FileName)
		id := fmt.Sprintf("52 %s/%d", backing.Uuid, c.gen)
		copyPath := fmt.Sprintf("%s.cbt-%d", file, c.gen)
		if err := copySparse(file, copyPath); err != nil {
			log.Printf("cbt stand-in: copying %s: %v", file, err)
			devices = append(devices, d)
			continue
		}
		c.ids[id] = copyPath
		keys[disk.Key] = id
		b := *backing
		b.ChangeId = id
		nd := *disk
		nd.Backing = &b
		devices = append(devices, &nd)
	}
	snap.Config.Hardware.Device = devices
	c.snaps[ref.Value] = keys
}

// copySparse copies a file, leaving holes where it has them.
func copySparse(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		return err
	}
	defer dst.Close()
	info, err := src.Stat()
	if err != nil {
		return err
	}
	buf := make([]byte, block)
	zero := make([]byte, block)
	for off := int64(0); off < info.Size(); off += block {
		n, err := src.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			return err
		}
		if !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := dst.WriteAt(buf[:n], off); err != nil {
				return err
			}
		}
	}
	return dst.Truncate(info.Size())
}

type queryRequest struct {
	Snapshot    string `xml:"Body>QueryChangedDiskAreas>snapshot"`
	DeviceKey   int32  `xml:"Body>QueryChangedDiskAreas>deviceKey"`
	StartOffset int64  `xml:"Body>QueryChangedDiskAreas>startOffset"`
	ChangeID    string `xml:"Body>QueryChangedDiskAreas>changeId"`
}

func (c *cbt) query(w http.ResponseWriter, text string) {
	var q queryRequest
	if err := xml.Unmarshal([]byte(text), &q); err != nil {
		fault(w, "InvalidArgument", "a request that does not parse")
		return
	}
	c.mu.Lock()
	current := c.ids[c.snaps[q.Snapshot][q.DeviceKey]]
	base, known := c.ids[q.ChangeID]
	c.mu.Unlock()
	if current == "" {
		fault(w, "InvalidArgument", "no such snapshot or disk")
		return
	}
	if q.ChangeID != "*" && (!known || !exists(base)) {
		fault(w, "FileFault", "Error caused by file "+current)
		return
	}
	now, err := ioutil.ReadFile(current)
	if err != nil {
		fault(w, "FileFault", err.Error())
		return
	}
	var then []byte
	if q.ChangeID != "*" {
		if then, err = ioutil.ReadFile(base); err != nil {
			fault(w, "FileFault", err.Error())
			return
		}
	}
	size := int64(len(now))
	var areas strings.Builder
	count := 0
	end := q.StartOffset
	for off := q.StartOffset; off < size && count < 4; off += block {
		to := off + block
		if to > size {
			to = size
		}
		var changed bool
		if then == nil {
			changed = !bytes.Equal(now[off:to], make([]byte, to-off))
		} else {
			changed = int64(len(then)) < to || !bytes.Equal(now[off:to], then[off:to])
		}
		end = to
		if !changed {
			continue
		}
		// Runs of changed blocks are one area.
		run := to
		for run < size {
			next := run + block
			if next > size {
				next = size
			}
			same := then != nil && int64(len(then)) >= next && bytes.Equal(now[run:next], then[run:next])
			if then == nil {
				same = bytes.Equal(now[run:next], make([]byte, next-run))
			}
			if same {
				break
			}
			run = next
		}
		fmt.Fprintf(&areas, "<changedArea><start>%d</start><length>%d</length></changedArea>", off, run-off)
		count++
		end = run
		off = run - block
	}
	if end <= q.StartOffset {
		end = size
	}
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><QueryChangedDiskAreasResponse xmlns="urn:vim25"><returnval><startOffset>%d</startOffset><length>%d</length>%s</returnval></QueryChangedDiskAreasResponse></soapenv:Body></soapenv:Envelope>`,
		q.StartOffset, end-q.StartOffset, areas.String())
}

// failQuiesce answers CreateSnapshot_Task with a task that failed to quiesce the guest.
func (c *cbt) failQuiesce(w http.ResponseWriter, text string) {
	var q struct {
		This string `xml:"Body>CreateSnapshot_Task>_this"`
	}
	xml.Unmarshal([]byte(text), &q)
	vm := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: q.This})
	if vm == nil {
		fault(w, "ManagedObjectNotFound", "no such VM")
		return
	}
	task := simulator.CreateTask(vm, "createSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, &types.ApplicationQuiesceFault{}
	})
	ref := task.Run()
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><CreateSnapshot_TaskResponse xmlns="urn:vim25"><returnval type="Task">%s</returnval></CreateSnapshot_TaskResponse></soapenv:Body></soapenv:Envelope>`, ref.Value)
}

func fault(w http.ResponseWriter, kind, message string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>%s</faultstring><detail><%sFault xmlns="urn:vim25" xsi:type="%s"></%sFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`,
		message, kind, kind, kind)
}

// snapshot takes a snapshot of DC0_H0_VM0 named name, as a user of the vCenter would.
func snapshot(u *url.URL, name string) error {
	ctx := context.Background()
	vm, err := vm0(ctx, u)
	if err != nil {
		return err
	}
	task, err := vm.CreateSnapshot(ctx, name, "not Sendense's", false, false)
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}

// vm0 is DC0_H0_VM0, reached through a client of the simulator at u.
func vm0(ctx context.Context, u *url.URL) (*object.VirtualMachine, error) {
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		return nil, err
	}
	finder := find.NewFinder(c.Client, true)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return nil, err
	}
	finder.SetDatacenter(dc)
	return finder.VirtualMachine(ctx, "DC0_H0_VM0")
}
