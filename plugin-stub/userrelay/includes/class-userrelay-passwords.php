<?php
/**
 * Password hashes across WordPress versions: which formats this site verifies, and on
 * WordPress 6.1-6.7 a check_password filter that verifies 6.8's "$wp$" hashes.
 *
 * WordPress 6.8 writes '$wp' . password_hash( base64_encode( hash_hmac( 'sha384',
 * trim( $password ), 'wp-sha384', true ) ), PASSWORD_BCRYPT ), and verifies by stripping '$wp'
 * and calling password_verify() on the same base64 of the HMAC (wp-includes/pluggable.php). No
 * site salt is involved, so a hash written by a 6.8 site verifies here too: a delivered "$wp$"
 * hash is stored as is, and the user logs in with the same password on both sites. 6.8 itself
 * verifies phpass ("$P$") and plain bcrypt ("$2y$") hashes, and rehashes them at the next login.
 *
 * Only ever adds a positive answer for a "$wp$" hash: any other hash, and any check already
 * passed or failed by WordPress for another format, is left as WordPress decided.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Password hash formats.
 */
final class UserRelay_Passwords {

	/** The HMAC key of WordPress 6.8's scheme (a constant of core, not a secret). */
	const WP_HMAC_KEY = 'wp-sha384';

	/**
	 * Adds the "$wp$" check on a WordPress that does not verify such hashes itself.
	 */
	public static function register(): void {
		if ( ! self::core_verifies_wp_bcrypt() ) {
			add_filter( 'check_password', array( __CLASS__, 'check_wp_bcrypt' ), 10, 4 );
		}
	}

	/**
	 * Whether this WordPress verifies "$wp$" hashes on its own (6.8+).
	 */
	public static function core_verifies_wp_bcrypt(): bool {
		return version_compare( get_bloginfo( 'version' ), '6.8-alpha', '>=' );
	}

	/**
	 * The hash formats a login here verifies: phpass and bcrypt (6.1's phpass falls back to
	 * crypt(), which verifies "$2y$"), and "$wp$" (by WordPress from 6.8 on, else by this plugin).
	 *
	 * @return string[]
	 */
	public static function formats(): array {
		return array( 'phpass', 'bcrypt', 'wp-bcrypt' );
	}

	/**
	 * The formats this plugin verifies in WordPress's place (the connection test shows them).
	 *
	 * @return string[]
	 */
	public static function formats_by_plugin(): array {
		return self::core_verifies_wp_bcrypt() ? array() : array( 'wp-bcrypt' );
	}

	/**
	 * The check_password filter: a "$wp$" hash verified as WordPress 6.8 does.
	 *
	 * @param bool       $check    What WordPress decided.
	 * @param string     $password The password given.
	 * @param string     $hash     The stored hash.
	 * @param string|int $user_id  The user's id, if known.
	 * @return bool
	 */
	public static function check_wp_bcrypt( $check, $password, $hash, $user_id = '' ) { // phpcs:ignore Generic.CodeAnalysis.UnusedFunctionParameter.FoundAfterLastUsed -- The filter's signature.
		if ( $check || ! is_string( $hash ) || ! is_string( $password ) || 0 !== strpos( $hash, '$wp$' ) ) {
			return $check;
		}
		$prehashed = base64_encode( hash_hmac( 'sha384', $password, self::WP_HMAC_KEY, true ) );
		return password_verify( $prehashed, substr( $hash, 3 ) );
	}
}
