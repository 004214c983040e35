/// Domain XML as KVM users have it: what virt-install writes, what people write by hand, what
/// `virsh dumpxml` shows for a running guest.
enum LibvirtFixtures {
    /// virt-install --boot kernel=…,initrd=…,kernel_args=… --os-variant fedora39 (libvirt 10).
    static let virtInstallKernelBoot = """
        <domain type='kvm'>
          <name>fedora-kernel</name>
          <uuid>7d3f8e9a-5b2c-4e1f-9a8d-3c6b2e1f0a4d</uuid>
          <metadata>
            <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
              <libosinfo:os id="http://fedoraproject.org/fedora/39"/>
            </libosinfo:libosinfo>
          </metadata>
          <memory unit='KiB'>2097152</memory>
          <currentMemory unit='KiB'>2097152</currentMemory>
          <vcpu placement='static'>2</vcpu>
          <os>
            <type arch='x86_64' machine='pc-q35-8.2'>hvm</type>
            <kernel>/var/lib/libvirt/boot/vmlinuz</kernel>
            <initrd>/var/lib/libvirt/boot/initrd.img</initrd>
            <cmdline>console=ttyS0 root=/dev/vda1 rw</cmdline>
            <boot dev='hd'/>
          </os>
          <features>
            <acpi/>
            <apic/>
            <vmport state='off'/>
          </features>
          <cpu mode='host-passthrough' check='none' migratable='on'/>
          <clock offset='utc'>
            <timer name='rtc' tickpolicy='catchup'/>
            <timer name='pit' tickpolicy='delay'/>
            <timer name='hpet' present='no'/>
          </clock>
          <on_poweroff>destroy</on_poweroff>
          <on_reboot>restart</on_reboot>
          <on_crash>destroy</on_crash>
          <pm>
            <suspend-to-mem enabled='no'/>
            <suspend-to-disk enabled='no'/>
          </pm>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2' discard='unmap'/>
              <source file='/var/lib/libvirt/images/fedora-kernel.qcow2'/>
              <target dev='vda' bus='virtio'/>
              <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
            </disk>
            <controller type='usb' index='0' model='qemu-xhci' ports='15'>
              <address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>
            </controller>
            <controller type='pci' index='0' model='pcie-root'/>
            <interface type='network'>
              <mac address='52:54:00:6b:3c:58'/>
              <source network='default'/>
              <model type='virtio'/>
              <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
            </interface>
            <serial type='pty'>
              <target type='isa-serial' port='0'>
                <model name='isa-serial'/>
              </target>
            </serial>
            <console type='pty'>
              <target type='serial' port='0'/>
            </console>
            <channel type='unix'>
              <target type='virtio' name='org.qemu.guest_agent.0'/>
              <address type='virtio-serial' controller='0' bus='0' port='1'/>
            </channel>
            <input type='tablet' bus='usb'>
              <address type='usb' bus='0' port='1'/>
            </input>
            <input type='mouse' bus='ps2'/>
            <input type='keyboard' bus='ps2'/>
            <graphics type='vnc' port='-1' autoport='yes'>
              <listen type='address'/>
            </graphics>
            <video>
              <model type='virtio' heads='1' primary='yes'/>
              <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/>
            </video>
            <memballoon model='virtio'>
              <address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/>
            </memballoon>
            <rng model='virtio'>
              <backend model='random'>/dev/urandom</backend>
              <address type='pci' domain='0x0000' bus='0x06' slot='0x00' function='0x0'/>
            </rng>
          </devices>
        </domain>
        """

    /// Hand-written, as in libvirt's "KVM direct kernel boot" examples: default KiB, no uuid,
    /// a block device, a bridge and an existing tap, no serial console.
    static let handWrittenRouter = """
        <domain type='kvm'>
          <name>router</name>
          <memory>524288</memory>
          <vcpu>1</vcpu>
          <os>
            <type>hvm</type>
            <kernel>/srv/vm/router/bzImage</kernel>
            <cmdline>console=ttyS0 panic=-1</cmdline>
          </os>
          <on_reboot>destroy</on_reboot>
          <devices>
            <disk type='block' device='disk'>
              <driver name='qemu' type='raw' cache='none' io='native'/>
              <source dev='/dev/vg0/router'/>
              <target dev='vda' bus='virtio'/>
              <serial>ROUTER-ROOT</serial>
            </disk>
            <interface type='bridge'>
              <source bridge='br-lan'/>
              <mac address='52:54:00:12:34:56'/>
              <model type='virtio'/>
            </interface>
            <interface type='ethernet'>
              <target dev='tap-wan' managed='no'/>
              <mac address='52:54:00:12:34:57'/>
              <model type='virtio'/>
            </interface>
          </devices>
        </domain>
        """

    /// `virsh dumpxml` of a running guest: live ids, aliases, pty paths, a SATA cdrom, seclabel.
    static let liveDump = """
        <domain type='kvm' id='7'>
          <name>db01</name>
          <uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>
          <title>Database server</title>
          <memory unit='KiB'>8388608</memory>
          <currentMemory unit='KiB'>4194304</currentMemory>
          <vcpu placement='static'>4</vcpu>
          <resource>
            <partition>/machine</partition>
          </resource>
          <os>
            <type arch='x86_64' machine='pc-i440fx-6.2'>hvm</type>
            <kernel>/var/lib/vireo/kernels/vmlinuz-6.1</kernel>
            <initrd>/var/lib/vireo/kernels/initrd-6.1.img</initrd>
            <cmdline>console=ttyS0 root=LABEL=root</cmdline>
          </os>
          <on_poweroff>destroy</on_poweroff>
          <on_reboot>restart</on_reboot>
          <on_crash>preserve</on_crash>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='/var/lib/libvirt/images/db01.qcow2' index='2'/>
              <backingStore/>
              <target dev='vda' bus='virtio'/>
              <alias name='virtio-disk0'/>
              <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>
            </disk>
            <disk type='file' device='cdrom'>
              <driver name='qemu' type='raw'/>
              <source file='/srv/iso/seed.iso' index='1'/>
              <backingStore/>
              <target dev='sda' bus='sata'/>
              <readonly/>
              <alias name='sata0-0-0'/>
              <address type='drive' controller='0' bus='0' target='0' unit='0'/>
            </disk>
            <interface type='bridge'>
              <mac address='52:54:00:a1:b2:c3'/>
              <source bridge='br0'/>
              <target dev='vnet3'/>
              <model type='virtio'/>
              <alias name='net0'/>
              <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
            </interface>
            <serial type='pty'>
              <source path='/dev/pts/4'/>
              <target type='isa-serial' port='0'>
                <model name='isa-serial'/>
              </target>
              <alias name='serial0'/>
            </serial>
            <console type='pty' tty='/dev/pts/4'>
              <source path='/dev/pts/4'/>
              <target type='serial' port='0'/>
              <alias name='serial0'/>
            </console>
          </devices>
          <seclabel type='dynamic' model='apparmor' relabel='yes'>
            <label>libvirt-c7a5fdbd-edaf-9455-926a-d65c16db1809</label>
          </seclabel>
        </domain>
        """

    /// Hand-written with units, Vireo's own metadata, extra settings Vireo lacks, a qemu passthrough.
    static let builderWithExtras = """
        <domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
          <name>builder</name>
          <uuid>0f8fad5bd9cb469fa16570867728950e</uuid>
          <metadata>
            <vireo:vm xmlns:vireo='https://vireo.dev/xmlns/domain/1'>
              <vireo:autostart>yes</vireo:autostart>
            </vireo:vm>
          </metadata>
          <maxMemory slots='16' unit='GiB'>64</maxMemory>
          <memory unit='GiB'>4</memory>
          <currentMemory unit='MB'>2048</currentMemory>
          <vcpu placement='static' current='2'>8</vcpu>
          <os>
            <type arch='x86_64'>hvm</type>
            <kernel>/opt/kernels/bzImage</kernel>
            <cmdline>console=ttyS0 quiet</cmdline>
          </os>
          <on_crash>restart</on_crash>
          <devices>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='/var/lib/vireo/builder.qcow2'/>
              <target dev='vda' bus='virtio'/>
              <boot order='1'/>
            </disk>
            <disk type='file' device='disk'>
              <driver name='qemu' type='raw'/>
              <source file='/var/lib/vireo/cache.img'/>
              <target dev='vdb' bus='virtio'/>
              <shareable/>
            </disk>
            <interface type='network'>
              <source network='build-net' portgroup='fast'/>
              <model type='virtio'/>
            </interface>
            <serial type='pty'><target port='0'/></serial>
            <serial type='file'><source path='/var/log/builder-com2.log'/><target port='1'/></serial>
            <watchdog model='i6300esb' action='reset'/>
          </devices>
          <qemu:commandline>
            <qemu:arg value='-no-hpet'/>
          </qemu:commandline>
        </domain>
        """
}
