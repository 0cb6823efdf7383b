<?php
/**
 * The relay's trust anchor: the plugin's HTTPS requests to the relay are verified against the
 * one certificate of the site's own CA bundle that the relay's chain leads to, not the whole
 * bundle.
 *
 * Why: WordPress gives cURL the site's bundle (about 150 authorities) and cURL parses all of it
 * again for every request, 14 ms more CPU per send than one CA file (docs/performance.md). The
 * anchor is learned from that same bundle, so trust is narrowed, never widened: it is used only
 * while the bundle is the one it was learned from (same path, size and modification time) and
 * only for the relay URL it was learned for, and its file must still hold exactly what was
 * learned. When a narrowed request fails verification (the relay's certificate moved to another
 * authority), the client repeats it at once against the whole bundle and the anchor is learned
 * again.
 *
 * Learning: after a request to the relay that the whole bundle verified, one TLS handshake with
 * PHP's stream wrapper (the same bundle as its cafile) captures the relay's chain; the anchor is
 * the first certificate of the chain found in the bundle, or the bundle's certificates that
 * signed the chain's last one. It is written under the uploads folder (a CA certificate is
 * public) and checked by one more handshake that trusts only it. A failure is remembered for a
 * day, so a site where it cannot be learned keeps the whole bundle without trying at every send.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Narrows the plugin's requests to the relay to the relay's trust anchor.
 */
final class UserRelay_Relay_Trust {

	/** The option holding what was learned (autoloaded: read at every send). */
	const OPTION = 'userrelay_relay_trust';

	/** Seconds before a failed learning is tried again. */
	const RETRY_AFTER = DAY_IN_SECONDS;

	/** Seconds for the learning handshakes. */
	const HANDSHAKE_TIMEOUT = 5;

	/**
	 * Settings.
	 *
	 * @var UserRelay_Settings
	 */
	private $settings;

	/**
	 * Whether the request under way may be narrowed (false: verified against the whole bundle).
	 *
	 * @var bool
	 */
	private $wanted = true;

	/**
	 * The CA bundle of the last attempt, as the site's filters left it
	 * (null: none, or not one the anchor applies to).
	 *
	 * @var string|null
	 */
	private $bundle = null;

	/**
	 * Whether the last attempt was narrowed to the anchor.
	 *
	 * @var bool
	 */
	private $narrowed = false;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Settings $settings Settings.
	 */
	public function __construct( UserRelay_Settings $settings ) {
		$this->settings = $settings;
	}

	/**
	 * One request of the plugin to the relay through WordPress's HTTP API: verified against the
	 * anchor when one is learned for this relay and the bundle the site's filters choose; when
	 * that verification fails, the anchor is forgotten and the request repeated at once against
	 * the whole bundle.
	 *
	 * @param string $url  Request URL.
	 * @param array  $args wp_remote_request() arguments.
	 * @return array|WP_Error
	 */
	public function request( string $url, array $args ) {
		$response = $this->attempt( $url, $args, true );
		if ( $this->narrowed && is_wp_error( $response ) && self::is_verification_error( $response->get_error_message() ) ) {
			$this->forget();
			$response = $this->attempt( $url, $args, false );
		}
		return $response;
	}

	/**
	 * One attempt of a request, narrowed when $narrow and an anchor applies.
	 *
	 * @param string $url    Request URL.
	 * @param array  $args   wp_remote_request() arguments.
	 * @param bool   $narrow False: the whole bundle, whatever is learned.
	 * @return array|WP_Error
	 */
	private function attempt( string $url, array $args, bool $narrow ) {
		$this->wanted   = $narrow;
		$this->narrowed = false;
		$this->bundle   = null;
		// After every other filter of the arguments, a site's own choice of bundle included.
		add_filter( 'http_request_args', array( $this, 'narrow' ), PHP_INT_MAX, 2 );
		try {
			return wp_remote_request( $url, $args );
		} finally {
			remove_filter( 'http_request_args', array( $this, 'narrow' ), PHP_INT_MAX );
		}
	}

	/**
	 * The http_request_args filter while request() runs: a request to the relay over HTTPS,
	 * verified, gets the anchor as its CA file when one is learned for this relay and bundle.
	 *
	 * @param array  $args Request arguments.
	 * @param string $url  Request URL.
	 * @return array
	 */
	public function narrow( $args, $url ) {
		if ( ! is_array( $args ) || ! $this->applies( $args, (string) $url ) ) {
			return $args;
		}
		$this->bundle = (string) $args['sslcertificates'];
		$anchor       = $this->wanted ? $this->anchor_file( $this->bundle ) : null;
		if ( null !== $anchor ) {
			$args['sslcertificates'] = $anchor;
			$this->narrowed          = true;
		}
		return $args;
	}

	/**
	 * After a narrowed request failed: whether the failure was the certificate's verification
	 * (worth repeating against the whole bundle) rather than the relay being unreachable.
	 *
	 * @param string $error The transport's error text.
	 */
	private static function is_verification_error( string $error ): bool {
		return 1 === preg_match( '/certificate|ssl|tls/i', $error );
	}

	/**
	 * Forgets the anchor (the whole bundle is used until it is learned again).
	 */
	private function forget(): void {
		delete_option( self::OPTION );
	}

	/**
	 * After a request that the whole bundle verified: learns the anchor if none is known for
	 * this relay and bundle and no recent attempt failed. Costs two TLS handshakes, once.
	 */
	public function learn_if_needed(): void {
		if ( null === $this->bundle || $this->narrowed ) {
			return;
		}
		$bundle = $this->bundle;
		$stored = get_option( self::OPTION );
		if ( is_array( $stored ) && ( $stored['for'] ?? '' ) === $this->key( $bundle ) ) {
			if ( isset( $stored['failed_at'] ) && time() - (int) $stored['failed_at'] < self::RETRY_AFTER ) {
				return;
			}
			if ( null !== $this->anchor_file( $bundle ) ) {
				return;
			}
		}
		$learned = $this->learn( $bundle );
		update_option(
			self::OPTION,
			is_array( $learned ) ? $learned : array(
				'for'       => $this->key( $bundle ),
				'failed_at' => time(),
				'why'       => $learned,
			),
			true
		);
	}

	/**
	 * Whether a request is one the anchor may narrow: HTTPS to the relay, verified, with a bundle.
	 *
	 * @param array  $args Request arguments.
	 * @param string $url  Request URL.
	 */
	private function applies( array $args, string $url ): bool {
		$relay = $this->settings->url();
		return 'https' === strtolower( (string) wp_parse_url( $relay, PHP_URL_SCHEME ) )
			&& 0 === strpos( $url, $relay . '/' )
			&& ! empty( $args['sslverify'] )
			&& ! empty( $args['sslcertificates'] )
			&& is_string( $args['sslcertificates'] )
			&& is_readable( $args['sslcertificates'] );
	}

	/**
	 * What an anchor is learned for: the relay's origin and the bundle's path, size and
	 * modification time. A changed bundle (an authority removed, say) is learned from again.
	 *
	 * @param string $bundle The bundle's path.
	 */
	private function key( string $bundle ): string {
		$parts = wp_parse_url( $this->settings->url() );
		$host  = is_array( $parts ) ? strtolower( (string) ( $parts['host'] ?? '' ) ) : '';
		$port  = is_array( $parts ) ? (int) ( $parts['port'] ?? 443 ) : 443;
		return $host . ':' . $port . '|' . $bundle . '|' . (int) @filesize( $bundle ) . '|' . (int) @filemtime( $bundle ); // phpcs:ignore Generic.PHP.NoSilencedErrors.Discouraged -- a vanished bundle is a different key.
	}

	/**
	 * The anchor's file, when one is learned for this relay and bundle and the file still holds
	 * exactly what was learned.
	 *
	 * @param string $bundle The bundle the request would use.
	 */
	private function anchor_file( string $bundle ): ?string {
		$stored = get_option( self::OPTION );
		if ( ! is_array( $stored ) || ! isset( $stored['file'], $stored['sha256'] ) || ( $stored['for'] ?? '' ) !== $this->key( $bundle ) ) {
			return null;
		}
		$file = (string) $stored['file'];
		return is_readable( $file ) && hash_equals( (string) $stored['sha256'], (string) hash_file( 'sha256', $file ) ) ? $file : null;
	}

	/**
	 * Learns the anchor from the relay's chain and the bundle, writes and checks its file.
	 *
	 * @param string $bundle The bundle's path.
	 * @return array|string What to store, or why it could not be learned.
	 */
	private function learn( string $bundle ) {
		if ( ! function_exists( 'openssl_x509_fingerprint' ) || ! function_exists( 'stream_socket_client' ) ) {
			return 'PHP has no openssl extension';
		}
		$chain = $this->chain( $bundle, true );
		if ( is_string( $chain ) ) {
			return $chain;
		}
		$anchors = self::anchors( $chain, (string) file_get_contents( $bundle ) ); // phpcs:ignore WordPress.WP.AlternativeFunctions.file_get_contents_file_get_contents -- a local file.
		if ( array() === $anchors ) {
			return 'none of the bundle\'s certificates is in or signed the relay\'s chain';
		}
		$pem     = implode( "\n", $anchors ) . "\n";
		$sha256  = hash( 'sha256', $pem );
		$uploads = wp_upload_dir( null, false );
		$folder  = trailingslashit( (string) $uploads['basedir'] ) . 'userrelay';
		$file    = $folder . '/relay-ca-' . substr( $sha256, 0, 16 ) . '.pem';
		if ( ! wp_mkdir_p( $folder ) || false === file_put_contents( $file, $pem, LOCK_EX ) ) { // phpcs:ignore WordPress.WP.AlternativeFunctions.file_system_operations_file_put_contents -- no credentials prompt in a background send.
			return 'cannot write ' . $file;
		}
		$check = $this->chain( $file, false );
		if ( is_string( $check ) ) {
			return 'the learned anchor does not verify the relay: ' . $check;
		}
		return array(
			'for'        => $this->key( $bundle ),
			'file'       => $file,
			'sha256'     => $sha256,
			'learned_at' => time(),
		);
	}

	/**
	 * One TLS handshake with the relay, verified against $cafile.
	 *
	 * @param string $cafile  The CA file.
	 * @param bool   $capture Whether to capture the relay's chain.
	 * @return array|string The chain (PEM strings; empty unless captured), or why it failed.
	 */
	private function chain( string $cafile, bool $capture ) {
		$parts   = wp_parse_url( $this->settings->url() );
		$host    = trim( (string) ( $parts['host'] ?? '' ), '[]' );
		$port    = (int) ( $parts['port'] ?? 443 );
		$ssl     = array(
			'cafile'                  => $cafile,
			'verify_peer'             => true,
			'verify_peer_name'        => true,
			'peer_name'               => $host,
			'SNI_enabled'             => true,
			'capture_peer_cert_chain' => $capture,
		);
		$address = 'ssl://' . ( false !== strpos( $host, ':' ) ? '[' . $host . ']' : $host ) . ':' . $port;
		$socket  = @stream_socket_client( $address, $errno, $errstr, self::HANDSHAKE_TIMEOUT, STREAM_CLIENT_CONNECT, stream_context_create( array( 'ssl' => $ssl ) ) ); // phpcs:ignore Generic.PHP.NoSilencedErrors.Discouraged -- the failure is returned.
		if ( false === $socket ) {
			return sprintf( 'TLS handshake with %s failed: %s', $address, '' !== (string) $errstr ? $errstr : 'error ' . $errno );
		}
		$params = stream_context_get_params( $socket );
		fclose( $socket ); // phpcs:ignore WordPress.WP.AlternativeFunctions.file_system_operations_fclose -- a socket.
		$pems = array();
		foreach ( $params['options']['ssl']['peer_certificate_chain'] ?? array() as $certificate ) {
			if ( openssl_x509_export( $certificate, $pem ) ) {
				$pems[] = $pem;
			}
		}
		return $capture && array() === $pems ? 'the relay sent no certificate chain' : $pems;
	}

	/**
	 * The anchor in a bundle for a chain: the first certificate of the chain (leaf first) that
	 * the bundle holds, else every bundle certificate that signed the chain's last one.
	 *
	 * @param string[] $chain  The relay's chain, PEM.
	 * @param string   $bundle The bundle's text.
	 * @return string[] PEM certificates.
	 */
	private static function anchors( array $chain, string $bundle ): array {
		preg_match_all( '/-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----/s', $bundle, $found );
		$by_print = array();
		foreach ( $found[0] as $pem ) {
			$print = openssl_x509_fingerprint( $pem, 'sha256' );
			if ( false !== $print ) {
				$by_print[ $print ] = $pem;
			}
		}
		foreach ( $chain as $pem ) {
			$print = openssl_x509_fingerprint( $pem, 'sha256' );
			if ( false !== $print && isset( $by_print[ $print ] ) ) {
				return array( $by_print[ $print ] );
			}
		}
		$last   = end( $chain );
		$issuer = openssl_x509_parse( $last );
		$issuer = is_array( $issuer ) ? ( $issuer['issuer'] ?? null ) : null;
		$signed = array();
		foreach ( $by_print as $pem ) {
			$ca = openssl_x509_parse( $pem );
			if ( is_array( $ca ) && ( $ca['subject'] ?? null ) === $issuer && function_exists( 'openssl_x509_verify' ) && 1 === openssl_x509_verify( $last, $pem ) ) {
				$signed[] = $pem;
			}
		}
		return $signed;
	}
}
